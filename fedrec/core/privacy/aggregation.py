"""Server-side aggregation of updates when a DP mode is on.

Replies carry ``(Δ̄_k, w_k)``: the mean update of node ``k``'s ``w_k`` trained users
(under DP every user weighs 1 — weighting by example counts would let one user's
influence grow with its data and would reveal the counts). The sum of a node's
contributions is ``S_k = w_k Δ̄_k``.

* ``record`` and ``user-local``: each ``Δ`` is already private; the server averages,
  ``Δ̄ = Σ_k S_k / Σ_k w_k`` (post-processing).
* ``user-central``: every user's ``Δ`` was clipped to ``C`` on its client, so adding
  or removing a user moves ``Σ_k S_k`` by at most ``C``; the server releases
  ``Δ̄ = (Σ_k S_k + N(0, σ²C² I)) / (q·n)`` — the noise on **every** entry, and the
  divisor the *expected* number of sampled users, a constant, so the realised number
  of participants is not part of the release. A round where nobody was sampled still
  releases the noise (the accountant counts every round).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fedrec.core.privacy.mechanisms import Arrays, add_gaussian_noise, update_norm

if TYPE_CHECKING:
    from fedrec.core.privacy.secure_random import SecureRandom


def _weighted_sum(updates: list[Arrays], weights: list[float], template: Arrays) -> Arrays:
    """``Σ_k w_k Δ̄_k`` in float64 (zeros shaped like ``template`` when there is no update)."""
    acc = {k: np.zeros(v.shape, dtype=np.float64) for k, v in template.items()}
    for update, weight in zip(updates, weights):
        for k in acc:
            acc[k] += weight * update[k]
    return acc


def private_mean(updates: list[Arrays], weights: list[float], template: Arrays) -> Arrays:
    """``Σ_k w_k Δ̄_k / Σ_k w_k`` (record, user-local); zeros when nobody trained."""
    total = float(sum(weights))
    acc = _weighted_sum(updates, weights, template)
    if total <= 0:
        return {k: v.astype(np.float32) for k, v in acc.items()}
    return {k: (v / total).astype(np.float32) for k, v in acc.items()}


def central_noised_mean(updates: list[Arrays], weights: list[float], template: Arrays, noise_multiplier: float,
                        clip: float, expected_units: float, generator: "SecureRandom") -> Arrays:
    """``(Σ_k w_k Δ̄_k + N(0, σ²C²)) / (q·n)`` (user-central)."""
    if not expected_units > 0:
        raise ValueError("the expected number of sampled users must be > 0")
    noised = add_gaussian_noise(_weighted_sum(updates, weights, template), noise_multiplier * clip, generator)
    return {k: (v.astype(np.float64) / expected_units).astype(np.float32) for k, v in noised.items()}


def exceeds_clip(mean_update: Arrays, weight: float, clip: float, slack: float = 1e-4) -> bool:
    """True when a node's contribution ``w·Δ̄`` is longer than ``w·C`` allows.

    A node of ``w`` users, each clipped to ``C``, cannot send a sum longer than ``w·C``;
    a longer one was not clipped (a broken or malicious client) and would void the
    guarantee, so the server drops it. ``slack`` absorbs float32 rounding.
    """
    return update_norm(mean_update) * weight > weight * clip * (1 + slack) + 1e-6
