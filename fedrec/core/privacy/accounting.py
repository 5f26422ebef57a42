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
    from opacus.accountants import PRVAccountant, RDPAccountant  # heavy: only when accounting

    engine = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    engine.history = list(runs)
    with warnings.catch_warnings():  # "optimal order is the largest alpha": ε is still a valid bound
        warnings.simplefilter("ignore", UserWarning)
        return float(engine.get_epsilon(delta))


@lru_cache(maxsize=1024)
def noise_for_epsilon(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                      accountant: str) -> float:
    """The smallest σ (to 1% of ε) with which ``steps`` steps at rate ``q`` stay within ε."""
    check_accountant(accountant)
    if not target_epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {target_epsilon}")
    if steps < 1 or not 0 < sample_rate <= 1:
        raise ValueError(f"need steps ≥ 1 and a sampling rate in (0, 1], got {steps}, {sample_rate}")
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                          sample_rate=sample_rate, steps=steps, accountant=accountant,
                                          epsilon_tolerance=0.01 * target_epsilon))
