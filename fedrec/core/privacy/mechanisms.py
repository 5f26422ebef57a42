"""The Gaussian mechanism on updates: joint L2 clipping and dense noise.

An update is a dict of arrays (the global part of the model). Its norm is the L2 norm
of all arrays flattened together, ``‖Δ‖ = sqrt(Σ_name ‖Δ_name‖²)``; clipping to ``C``
scales it by ``min(1, C / ‖Δ‖)`` so that one unit changes a sum of clipped updates by at
most ``C`` (the sensitivity). Noise ``N(0, σ²C²)`` is added to **every** entry of every
array — every row of the item tables, touched or not — so the noised release shows no
trace of which items a user trained on.

Noise and secret samples come from :class:`~fedrec.core.privacy.secure_random.SecureRandom`
(ChaCha20 keyed with 256 bits from the OS, see that module for why and for floating-point
attacks): a seed derived from the run config, or a 32-bit torch seed, would let anyone
who knows it subtract the noise. Tests pass a ``SecureRandom`` with a fixed key.
"""

from __future__ import annotations

import numpy as np

from fedrec.core.arrays import Arrays
from fedrec.core.privacy.secure_random import SecureRandom, secure_generator

__all__ = ["Arrays", "SecureRandom", "secure_generator", "poisson_sample", "update_norm", "clip_update",
           "add_gaussian_noise"]


def poisson_sample(candidates: list[int], rate: float, generator: SecureRandom | None = None) -> list[int]:
    """Each candidate independently with probability ``rate``, from a :class:`SecureRandom`
    (the accountant's amplification needs a sample nobody can replay)."""
    if not candidates:
        return []
    draw = generator if generator is not None else secure_generator()
    mask = draw.bernoulli(rate, len(candidates))
    return [c for c, keep in zip(candidates, mask) if keep]


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


def add_gaussian_noise(arrays: Arrays, std: float, generator: SecureRandom) -> Arrays:
    """``arrays + N(0, std²)`` on every entry (float64 draws and sum, rounded to float32:
    the snapping of :mod:`fedrec.core.privacy.secure_random`)."""
    if not isinstance(generator, SecureRandom):
        raise TypeError(f"noise must come from a SecureRandom, got {type(generator).__name__}")
    if not std >= 0:
        raise ValueError(f"noise std must be ≥ 0, got {std}")
    return {k: (v.astype(np.float64) + generator.normal(0.0, std, size=v.shape)).astype(np.float32)
            for k, v in arrays.items()}
