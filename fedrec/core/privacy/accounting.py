"""Privacy accounting for the Poisson-subsampled Gaussian mechanism (Opacus accountants).

Every mechanism fedrec runs is a Gaussian mechanism on a sum of contributions clipped
to L2 norm ``C`` with noise ``N(0, σ²C²)``, applied to a Poisson sample where each
unit (a record, or a user) is included independently with probability ``q``. One such
application is a *step*; a *history* is the list of ``(σ, q, steps)`` runs applied to
the same unit's data, composed in order. Neighbouring datasets differ by adding or
removing one unit (Opacus' convention).

``epsilon(history, δ, accountant)`` is the ε of the composition at ``δ``:

* ``rdp`` — Rényi DP of the subsampled Gaussian (Mironov, Talwar, Zhang 2019) summed
  over steps and converted to (ε, δ) at the best order (Opacus ``RDPAccountant``);
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

ACCOUNTANTS = ("rdp", "prv")

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
        from opacus.accountants import RDPAccountant
        from opacus.accountants.analysis.rdp import get_privacy_spent

        rdp = sum(steps * _rdp_step_curve(sigma, rate, RDP_ORDERS) for sigma, rate, steps in runs)
        with warnings.catch_warnings():  # "optimal order is the largest alpha": ε is still a valid bound
            warnings.simplefilter("ignore", UserWarning)
            eps, _ = get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
        return float(eps)
    from opacus.accountants import PRVAccountant

    engine = PRVAccountant()
    engine.history = list(runs)
    return float(engine.get_epsilon(delta))


# Opacus' RDPAccountant orders (fractional 1.1–10.9, then 12–63): the same ε as RDPAccountant.
RDP_ORDERS = "opacus"
# Integer orders only, for the σ search: the fractional ones cost ~0.1 s per σ for q < 1, the
# integer ones a few ms. Fewer orders give a larger (still valid) ε, so σ found with them is
# never too small for the full accountant.
SEARCH_ORDERS = "integers"


@lru_cache(maxsize=8192)
def _rdp_step_curve(sigma: float, rate: float, orders: str) -> np.ndarray:
    """RDP of one subsampled-Gaussian step at every order (Mironov et al. 2019, via Opacus)."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp

    alphas = RDPAccountant.DEFAULT_ALPHAS if orders == RDP_ORDERS else list(range(2, 65))
    return np.asarray(compute_rdp(q=rate, noise_multiplier=sigma, steps=1, orders=alphas), dtype=np.float64)


def _search_epsilon(sigma: float, rate: float, steps: int, delta: float) -> float:
    from opacus.accountants.analysis.rdp import get_privacy_spent

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        eps, _ = get_privacy_spent(orders=list(range(2, 65)), rdp=steps * _rdp_step_curve(sigma, rate, SEARCH_ORDERS),
                                   delta=delta)
    return float(eps)


@lru_cache(maxsize=1024)
def noise_for_epsilon(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                      accountant: str) -> float:
    """A σ (within 1% of the smallest) with which ``steps`` steps at rate ``q`` stay within ε.

    Bisection on σ. ``rdp``: ε from integer orders 2–64 (fast, and an upper bound of
    the accountant's ε, so the σ is safe for it); ``prv``: ε from the PRV accountant,
    bracketed by the RDP σ (PRV's ε is usually below RDP's). The result is checked with
    the named accountant before it is returned.
    """
    check_accountant(accountant)
    if not target_epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {target_epsilon}")
    if steps < 1 or not 0 < sample_rate <= 1:
        raise ValueError(f"need steps ≥ 1 and a sampling rate in (0, 1], got {steps}, {sample_rate}")
    if accountant == "rdp":
        spent = lambda sigma: _search_epsilon(sigma, sample_rate, steps, delta)  # noqa: E731
    else:
        spent = lambda sigma: epsilon([(sigma, sample_rate, steps)], delta, "prv")  # noqa: E731
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
    if epsilon([(high, sample_rate, steps)], delta, accountant) > target_epsilon:
        raise RuntimeError("the σ search returned a σ that overshoots ε: this is a bug")
    return high
