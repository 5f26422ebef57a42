"""Tests for :mod:`fedrec.core.evaluation.ratings`, with hand-worked numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.core.evaluation.ratings import mae, rmse


def test_rmse_and_mae_hand_worked() -> None:
    # errors ŷ − y = [1, 0, −2]: MAE = 3/3 = 1; RMSE = sqrt((1 + 0 + 4) / 3) = sqrt(5/3) = 1.29099
    predicted = np.array([3.0, 4.0, 5.0])
    actual = np.array([2.0, 4.0, 7.0])
    assert mae(predicted, actual) == pytest.approx(1.0)
    assert rmse(predicted, actual) == pytest.approx(math.sqrt(5 / 3))


def test_rmse_and_mae_zero_for_perfect_predictions() -> None:
    assert rmse(np.array([1.5, 2.0]), np.array([1.5, 2.0])) == 0.0
    assert mae(np.array([1.5, 2.0]), np.array([1.5, 2.0])) == 0.0


@pytest.mark.parametrize("metric", [rmse, mae])
def test_rating_errors_reject_bad_input(metric) -> None:
    with pytest.raises(ValueError, match="does not match"):
        metric(np.array([1.0, 2.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="no ratings"):
        metric(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        metric(np.array([1.0, math.nan]), np.array([1.0, 2.0]))
