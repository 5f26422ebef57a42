"""Privacy accounting for the Poisson-subsampled Gaussian mechanism (Opacus accountants).

Every mechanism fedrec runs is a Gaussian mechanism on a sum of contributions clipped
to L2 norm ``C`` with noise ``N(0, σ²C²)``, applied to a Poisson sample where each
unit (a record, or a user) is included independently with probability ``q``. One such
application is a *step*; a *history* is the list of ``(σ, q, steps)`` runs applied to
the same unit's data, composed in order.

The relation. The accountants below describe *add/remove* neighbours (a dataset with
or without one unit, Opacus' convention) for a contribution of L2 norm at most ``C``.
A mechanism whose neighbours are *replace-one* (the adversary sees one unit's release
alone, so the two datasets are two values of the same unit; see
:mod:`fedrec.core.privacy.plan`) has sensitivity ``2C``; with ``q = 1`` it is exactly the
Gaussian mechanism with noise multiplier ``σ_noise / 2``. So ``σ`` in a step is always
**noise std / sensitivity under the mode's relation**, and the composition is the same
for both relations. (Replace-one with ``q < 1`` is never used: no mode needs it.)

``epsilon(history, δ, accountant)`` is the ε of the composition at ``δ``:

* ``rdp`` — Rényi DP of the subsampled Gaussian (Mironov, Talwar, Zhang 2019) summed
  over steps and converted to (ε, δ) at the best of the integer orders 2–128
  (``RDP_ORDERS``; Opacus' ``compute_rdp`` and ``get_privacy_spent``);
* ``prv`` — numerical composition of privacy random variables (Gopi, Lee, Wutschitz
  2021), the upper end of its error bound (Opacus ``PRVAccountant``). Tighter, slower.

Both are upper bounds on the true ε. With ``q = 1`` the mechanism is the plain
Gaussian mechanism (no amplification), which is how a user-local client accounts for
its own releases.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

from fedrec.core.config.privacy_section import ACCOUNTANTS

__all__ = ["ACCOUNTANTS", "RDP_ORDERS", "Step", "check_accountant", "compact", "epsilon", "noise_for_epsilon"]

# one run of identical steps: (noise multiplier σ, sampling rate q, number of steps)
Step = tuple[float, float, int]


def check_accountant(name: str) -> str:
    if name not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {name!r}: choose one of {ACCOUNTANTS}")
    return name


def compact(history: Iterable[Step]) -> list[Step]:
    """Merge consecutive runs with the same ``(σ, q)`` (composition is order-free)."""
    merged: list[Step] = []
    for sigma, rate, steps in history:
        if steps < 0 or not sigma >= 0 or not 0 <= rate <= 1:
            raise ValueError(f"invalid mechanism step (σ={sigma}, q={rate}, steps={steps})")
        if steps == 0:
            continue
        if merged and merged[-1][0] == sigma and merged[-1][1] == rate:
            merged[-1] = (sigma, rate, merged[-1][2] + steps)
        else:
            merged.append((float(sigma), float(rate), int(steps)))
    return merged


def epsilon(history: Sequence[Step], delta: float, accountant: str) -> float:
    """ε at ``delta`` after composing ``history`` (0 for an empty history; ∞ if σ = 0)."""
    check_accountant(accountant)
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    runs = compact(history)
    if not runs:
        return 0.0
    if any(sigma == 0 and rate > 0 for sigma, rate, _ in runs):
        return float("inf")
    return _epsilon_cached(tuple(runs), float(delta), accountant)


@lru_cache(maxsize=4096)
def _epsilon_cached(runs: tuple[Step, ...], delta: float, accountant: str) -> float:
    if accountant == "rdp":  # RDP is additive: Σ steps · (one step's curve), curves cached per (σ, q)
        return _rdp_epsilon(sum(steps * _rdp_step_curve(sigma, rate) for sigma, rate, steps in runs), delta)
    from opacus.accountants import PRVAccountant

    engine = PRVAccountant()
    engine.history = list(runs)
    return float(engine.get_epsilon(delta))


# Integer orders only. Opacus' default adds fractional orders 1.1–10.9, where its exact
# formula and dp_accounting's series disagree by up to 20 % (dp_accounting is high), so an
# audit could only check ε within wide bands. At integer orders both compute the same
# closed form and agree to ~1e-12 relative, so the audit checks recorded ε within 1e-4.
# The cost: when the best order would lie below 2 (ε ≳ 20, little noise) ε is larger than
# with fractional orders — a valid, looser bound, never a smaller one.
RDP_ORDERS: tuple[int, ...] = tuple(range(2, 129))


def _rdp_epsilon(rdp: np.ndarray, delta: float) -> float:
    from opacus.accountants.analysis.rdp import get_privacy_spent

    with warnings.catch_warnings():  # "optimal order is the largest alpha": ε is still a valid bound
        warnings.simplefilter("ignore", UserWarning)
        eps, _ = get_privacy_spent(orders=list(RDP_ORDERS), rdp=rdp, delta=delta)
    return float(eps)


@lru_cache(maxsize=8192)
def _rdp_step_curve(sigma: float, rate: float) -> np.ndarray:
    """RDP of one subsampled-Gaussian step at every order of ``RDP_ORDERS`` (Mironov et al.
    2019, via Opacus' ``compute_rdp``)."""
    from opacus.accountants.analysis.rdp import compute_rdp

    curve = np.asarray(compute_rdp(q=rate, noise_multiplier=sigma, steps=1, orders=list(RDP_ORDERS)),
                       dtype=np.float64)
    curve.setflags(write=False)
    return curve


@lru_cache(maxsize=1024)
def noise_for_epsilon(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                      accountant: str, base: tuple[Step, ...] = ()) -> float:
    """A σ (within 0.5 % of the smallest) with which ``steps`` steps at rate ``q``, composed
    with the runs ``base`` (e.g. the evaluation releases a unit will also make), stay within ε.

    Bisection on σ with the named accountant; the result is checked before it is returned.
    """
    check_accountant(accountant)
    if not target_epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {target_epsilon}")
    if steps < 1 or not 0 < sample_rate <= 1:
        raise ValueError(f"need steps ≥ 1 and a sampling rate in (0, 1], got {steps}, {sample_rate}")
    if epsilon(list(base), delta, accountant) >= target_epsilon:
        raise ValueError(f"the other releases {list(base)} already spend ε ≥ {target_epsilon}")
    spent = lambda sigma: epsilon([*base, (sigma, sample_rate, steps)], delta, accountant)  # noqa: E731
    high = 1.0
    while spent(high) > target_epsilon:
        high *= 2
        if high > 1e6:
            raise ValueError(f"no σ reaches ε={target_epsilon} at δ={delta} in {steps} steps")
    low = 0.0
    while high - low > 0.005 * high:
        middle = (low + high) / 2
        if middle > 0 and spent(middle) <= target_epsilon:
            high = middle
        else:
            low = middle
    if epsilon([*base, (high, sample_rate, steps)], delta, accountant) > target_epsilon:
        raise RuntimeError("the σ search returned a σ that overshoots ε: this is a bug")
    return high
