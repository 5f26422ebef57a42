"""The Gaussian mechanism on updates: joint L2 clipping and dense noise.

An update is a dict of arrays (the global part of the model). Its norm is the L2 norm
of all arrays flattened together, ``‖Δ‖ = sqrt(Σ_name ‖Δ_name‖²)``; clipping to ``C``
scales it by ``min(1, C / ‖Δ‖)`` so that one unit changes a sum of clipped updates by at
most ``C`` (the sensitivity). Noise ``N(0, σ²C²)`` is added to **every** entry of every
array — every row of the item tables, touched or not — so the noised release shows no
trace of which items a user trained on.

Noise is drawn from a generator seeded by the operating system's entropy
(:func:`secure_generator`): a seed derived from the run config would let anyone who
knows the config subtract the noise. Tests pass their own generator.
"""

from __future__ import annotations

import random
import secrets

import numpy as np
from numpy.typing import NDArray

Arrays = dict[str, NDArray[np.float32]]


def secure_generator() -> np.random.Generator:
    """A generator seeded with 128 bits from the OS (not reproducible, on purpose)."""
    return np.random.default_rng(secrets.randbits(128))


def poisson_sample(candidates: list[int], rate: float) -> list[int]:
    """Each candidate independently with probability ``rate``, drawn from OS entropy
    (the accountant's amplification needs a sample nobody can replay)."""
    draw = random.SystemRandom()
    return [c for c in candidates if draw.random() < rate]


def update_norm(update: Arrays) -> float:
    """``sqrt(Σ_name ‖Δ_name‖²)`` in float64."""
    return float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in update.values())))


def clip_update(update: Arrays, clip: float) -> tuple[Arrays, float]:
    """``Δ · min(1, C / ‖Δ‖)`` and the norm before clipping."""
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    norm = update_norm(update)
    if not np.isfinite(norm):
        raise ValueError("cannot clip an update with non-finite values")
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return {k: (v * scale).astype(np.float32) for k, v in update.items()}, norm


def add_gaussian_noise(arrays: Arrays, std: float, generator: np.random.Generator) -> Arrays:
    """``arrays + N(0, std²)`` on every entry (float64 draws, float32 result)."""
    if not std >= 0:
        raise ValueError(f"noise std must be ≥ 0, got {std}")
    return {k: (v.astype(np.float64) + generator.normal(0.0, std, size=v.shape)).astype(np.float32)
            for k, v in arrays.items()}
