"""Rating-prediction errors: RMSE = sqrt(mean((ŷ − y)²)), MAE = mean(|ŷ − y|), in rating units."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray


def _rating_errors(predicted: NDArray[np.floating], actual: NDArray[np.floating]) -> NDArray[np.floating]:
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if predicted.shape != actual.shape:
        raise ValueError(f"predicted shape {predicted.shape} does not match actual shape {actual.shape}")
    if predicted.size == 0:
        raise ValueError("no ratings given")
    if np.isnan(predicted).any() or np.isnan(actual).any():
        raise ValueError("ratings contain NaN")
    return predicted - actual


def rmse(predicted: NDArray[np.floating], actual: NDArray[np.floating]) -> float:
    """sqrt(mean((ŷ − y)²)), in rating units."""
    return math.sqrt(float(np.mean(_rating_errors(predicted, actual) ** 2)))


def mae(predicted: NDArray[np.floating], actual: NDArray[np.floating]) -> float:
    """mean(|ŷ − y|), in rating units."""
    return float(np.mean(np.abs(_rating_errors(predicted, actual))))
