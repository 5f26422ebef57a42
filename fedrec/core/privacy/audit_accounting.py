"""The audit's accountants and tolerances: ε of a ledger history recomputed independently.

A history is a sequence of runs ``(σ, q, steps)``, each ``steps`` compositions of the
Poisson-subsampled Gaussian mechanism (sampling rate ``q``, noise multiplier ``σ`` =
noise std / sensitivity; ``q = 1``: the plain Gaussian). Its ε at δ is computed

* by the training path's own Opacus accountant (:func:`opacus_epsilon`, through
  :func:`fedrec.core.privacy.accounting.epsilon`), and
* independently with Google's ``dp_accounting`` (:class:`Independent`): RDP is additive
  in steps, so a history's RDP curve at the orders :data:`ORDERS` is
  ``Σ_runs steps · rdp_step(σ, q)`` and ε is its conversion at δ; the PLD ε composes
  the runs' privacy-loss distributions (FFT-composed, cached per prefix). The DpEvent of
  a run is ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), steps)``,
  ``GaussianDpEvent(σ)`` when ``q = 1``.

A recorded ε ``r`` agrees with an independent ε ``e`` when it lies in the
:class:`Band` of the pair of accountants (:data:`DEFAULT_TOLERANCE`); the measurements
behind each band are in ``docs/audit.md``.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator, Sequence

import numpy as np

from fedrec.core.privacy import accounting

ORDERS = accounting.RDP_ORDERS  # the orders the recorded RDP ε were minimised over
PLD_DISCRETIZATION = 1e-4  # dp_accounting's default; 1e-3 drifts up to 0.085 from it at 10⁴ steps


@dataclass(frozen=True)
class Band:
    """When a recorded ε ``r`` agrees with an independent ε ``e``:

    ``e·(1 − below(e)) − abs ≤ r ≤ e·(1 + above) + abs``, where ``below(e)`` is the
    relative slack of the first ``(up_to, slack)`` step with ``e ≤ up_to`` (1.0, i.e.
    unchecked, past the last step) and ``above = inf`` leaves the upper side unchecked.
    """

    below: tuple[tuple[float, float], ...]
    above: float
    below_abs: float
    above_abs: float

    def below_slack(self, independent: float) -> float:
        return next((slack for up_to, slack in self.below if independent <= up_to), 1.0)

    def low(self, independent: float) -> float:
        """The smallest recorded ε that still agrees with ``independent``."""
        if math.isinf(independent):
            return math.inf
        return independent * (1 - self.below_slack(independent)) - self.below_abs

    def high(self, independent: float) -> float:
        """The largest recorded ε that still agrees with ``independent``."""
        if math.isinf(self.above) or math.isinf(independent):
            return math.inf
        return independent * (1 + self.above) + self.above_abs

    def agrees(self, recorded: float, independent: float) -> bool:
        return self.low(independent) <= recorded <= self.high(independent)


@dataclass(frozen=True)
class Tolerance:
    """Slack of each check (``docs/audit.md`` has the measurements behind it).

    ``bands[(recorded accountant, independent accountant)]``; ``opacus_rel`` is the
    relative slack between a recorded ε and the same Opacus accountant rerun.
    """

    bands: dict[tuple[str, str], Band]
    opacus_rel: float = 1e-6
    opacus_abs: float = 1e-9

    def band(self, recorded: str, independent: str) -> Band:
        return self.bands[(recorded, independent)]

    def opacus_agrees(self, recorded: float, recomputed: float) -> bool:
        if math.isinf(recorded) or math.isinf(recomputed):
            return recorded == recomputed
        return abs(recorded - recomputed) <= self.opacus_abs + self.opacus_rel * abs(recomputed)


DEFAULT_TOLERANCE = Tolerance(bands={
    ("rdp", "rdp"): Band(below=((math.inf, 1e-4),), above=1e-4, below_abs=1e-9, above_abs=1e-9),
    ("prv", "pld"): Band(below=((math.inf, 0.0),), above=0.0, below_abs=0.005, above_abs=0.025),
    ("prv", "rdp"): Band(below=(), above=1e-6, below_abs=0.0, above_abs=1e-9),
    ("rdp", "pld"): Band(below=((math.inf, 0.0),), above=math.inf, below_abs=0.005, above_abs=0.0),
})
# a prv row not checked exactly: recorded ≤ Opacus RDP ε of its history, and ≥ the previous row − this
BRACKET_ABS = 0.005


@contextmanager
def quiet_absl() -> Iterator[None]:
    """dp_accounting logs an absl warning for each fractional order it cannot converge."""
    from absl import logging as absl_logging

    before = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(before)


def dp_event(sigma: float, rate: float, steps: int) -> Any:
    """The dp_accounting event of ``steps`` Poisson-subsampled Gaussian steps."""
    from dp_accounting import dp_event as events

    step = events.GaussianDpEvent(sigma)
    if rate < 1:
        step = events.PoissonSampledDpEvent(rate, step)
    return events.SelfComposedDpEvent(step, steps)


def spends(sigma: float, rate: float, steps: int) -> bool:
    """False for a run that touches nobody (q = 0, no steps) or adds infinite noise."""
    return steps > 0 and rate > 0 and not math.isinf(sigma)


def merge_history(history: Sequence[accounting.Step]) -> tuple[accounting.Step, ...]:
    """Drop runs that spend nothing; merge consecutive runs with the same ``(σ, q)``."""
    merged: list[accounting.Step] = []
    for sigma, rate, steps in history:
        if not spends(sigma, rate, steps):
            continue
        if merged and merged[-1][:2] == (sigma, rate):
            merged[-1] = (sigma, rate, merged[-1][2] + steps)
        else:
            merged.append((float(sigma), float(rate), int(steps)))
    return tuple(merged)


@lru_cache(maxsize=8192)
def _dp_rdp_step_curve(sigma: float, rate: float) -> np.ndarray:
    """RDP of one step at ``ORDERS`` (dp_accounting has no public getter: ``_rdp``)."""
    from dp_accounting.rdp import RdpAccountant

    engine = RdpAccountant(orders=list(ORDERS))
    with quiet_absl():
        engine.compose(dp_event(sigma, rate, 1))
    curve = np.array(engine._rdp, dtype=np.float64)
    curve.setflags(write=False)
    return curve


class Independent:
    """dp_accounting's RDP curves and PLDs (the PLDs cached for one audit: ~1 MB each)."""

    def __init__(self) -> None:
        self._plds: dict[tuple[accounting.Step, ...], Any] = {}
        self._runs: dict[accounting.Step, Any] = {}
        self._steps: dict[tuple[float, float], Any] = {}
        self._pld_epsilons: dict[tuple[tuple[accounting.Step, ...], float], float] = {}

    @staticmethod
    def rdp_curve(sigma: float, rate: float) -> np.ndarray:
        """RDP of one step at every order of ``ORDERS``."""
        return _dp_rdp_step_curve(float(sigma), float(rate))

    @staticmethod
    def rdp_epsilon(rdp: np.ndarray, delta: float) -> float:
        from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

        with quiet_absl():
            return float(compute_epsilon(list(ORDERS), list(rdp), delta)[0])

    def pld_epsilon(self, history: tuple[accounting.Step, ...], delta: float) -> float:
        """PLD ε of a merged history (0 when empty, ∞ when a run has σ = 0)."""
        if not history:
            return 0.0
        if any(sigma == 0 for sigma, _, _ in history):
            return math.inf
        key = (history, delta)
        if key not in self._pld_epsilons:  # ~40 ms each: many rows share a history
            self._pld_epsilons[key] = float(self._pld(history).get_epsilon_for_delta(delta))
        return self._pld_epsilons[key]

    def has_pld_epsilon(self, history: tuple[accounting.Step, ...], delta: float) -> bool:
        """Whether the PLD ε of ``history`` at ``delta`` is already computed (so free)."""
        return (history, delta) in self._pld_epsilons

    def _pld(self, history: tuple[accounting.Step, ...]) -> Any:
        # what PLDAccountant.compose does for these events, with each prefix kept for reuse
        if history not in self._plds:
            run = self._run(history[-1])
            self._plds[history] = run if len(history) == 1 else self._pld(history[:-1]).compose(run)
            _keep_newest(self._plds, 32)
        return self._plds[history]

    def _run(self, run: accounting.Step) -> Any:
        from dp_accounting.pld import privacy_loss_distribution as pld

        if run not in self._runs:
            sigma, rate, steps = run
            if rate == 1:  # k Gaussian steps are one Gaussian with σ/√k (as PLDAccountant does)
                self._runs[run] = pld.from_gaussian_mechanism(
                    sigma / math.sqrt(steps), value_discretization_interval=PLD_DISCRETIZATION)
            else:  # the one-step PLD (~0.3 s to build) is shared by every step count
                self._runs[run] = self._step(sigma, rate).self_compose(steps)
            _keep_newest(self._runs, 32)
        return self._runs[run]

    def _step(self, sigma: float, rate: float) -> Any:
        from dp_accounting.pld import privacy_loss_distribution as pld

        if (sigma, rate) not in self._steps:
            self._steps[(sigma, rate)] = pld.from_gaussian_mechanism(
                sigma, sampling_prob=rate, value_discretization_interval=PLD_DISCRETIZATION)
            _keep_newest(self._steps, 64)
        return self._steps[(sigma, rate)]


def _keep_newest(cache: dict, size: int) -> None:
    """Bound a PLD cache (~1 MB an entry) by dropping its oldest entries."""
    while len(cache) > size:
        del cache[next(iter(cache))]


def opacus_epsilon(history: Sequence[accounting.Step], delta: float, name: str) -> float:
    """The training path's accountant on the spending part of ``history``."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # PRV's log(1 − q) at q = 1
        return accounting.epsilon([run for run in history if spends(*run)], delta, name)

