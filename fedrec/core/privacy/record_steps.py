"""The public schedule of record-level DP-SGD: sampling rate and steps (no Opacus imports).

The schedule is a function of public configuration only, never of the user's data: the
Poisson rate ``q`` is the run config's ``record_sample_rate`` (each record joins each
step's batch independently with probability ``q``), an epoch is ``⌈1/q⌉`` steps, and a
round is ``(local-epochs + user-epochs)·⌈1/q⌉`` steps, all at the same ``(σ, q)``. The
noised sum of clipped gradients is divided by the public constant ``batch_size`` (see
:mod:`fedrec.core.privacy.record_level`). Adding or removing one record of a user changes
none of these numbers, so add/remove of one record is the neighbouring relation and the
accountant's Poisson-subsampled Gaussian analysis applies as is.

Kept free of Opacus imports: the server and the plan need these numbers without training
anything. A user with no records trains nothing: :func:`user_steps_per_round` is 0 for
them (and :func:`steps_per_round` for everyone else).
"""

from __future__ import annotations

import math

# 1/q within this relative distance of an integer k counts as k (q = 0.05 written in
# decimal is 20 steps, not 21, whatever the last bit of 1/0.05 is)
_INTEGER_TOLERANCE = 1e-9


def sample_rate(config_rate: float) -> float:
    """The Poisson rate ``q`` of one record per step: the configured rate, checked ``0 < q ≤ 1``."""
    rate = float(config_rate)
    if not (math.isfinite(rate) and 0 < rate <= 1):
        raise ValueError(f"record sample rate q must be in (0, 1], got {config_rate}")
    return rate


def steps_per_epoch(rate: float) -> int:
    """Steps of one Poisson "epoch": ``⌈1/q⌉`` (each record is sampled ≈ once per epoch)."""
    inverse = 1.0 / sample_rate(rate)
    nearest = round(inverse)
    if abs(inverse - nearest) <= _INTEGER_TOLERANCE * nearest:
        return int(nearest)
    return math.ceil(inverse)


def steps_per_round(rate: float, local_epochs: int, user_epochs: int) -> int:
    """Mechanism steps one round applies to a user with at least one record (both phases)."""
    if local_epochs < 0 or user_epochs < 0:
        raise ValueError(f"epochs must be ≥ 0, got local_epochs={local_epochs}, user_epochs={user_epochs}")
    return (local_epochs + user_epochs) * steps_per_epoch(rate)


def user_steps_per_round(n_records: int, rate: float, local_epochs: int, user_epochs: int) -> int:
    """:func:`steps_per_round` for a user with ``n_records`` records: 0 when they have none."""
    if n_records < 0:
        raise ValueError(f"n_records must be ≥ 0, got {n_records}")
    return steps_per_round(rate, local_epochs, user_epochs) if n_records > 0 else 0
