"""``fedrec audit RUN_DIR``: check a run's privacy ledger and re-derive every ε in it.

What is checked
---------------
1. The ledger's hash chain, and the anchors ``(ledger_rows, ledger_head)`` the server
   wrote into ``metrics.jsonl`` each round (:mod:`fedrec.core.privacy.ledger`).
2. Every row's parameters are valid (as ``PrivacyLedger.append`` demands).
3. Rows are grouped by ``(who, unit)`` in ``seq`` order; the ε after row ``k`` is the
   composition of the group's rows ``1..k``, each the Poisson-subsampled Gaussian
   ``(σ, q, steps)`` (``q = 1``: the plain Gaussian), at the row's δ. It is recomputed
   twice:

   * with the row's own Opacus accountant, :func:`fedrec.core.privacy.accounting.epsilon`
     — this must give the recorded ε to ``opacus_rel`` = 1e-6 relative; a miss means
     the recorded ε, its parameters, or the ledger's rows were altered, or the who's
     accountant saw mechanism runs that are not in the ledger;
   * independently of the training path, with Google's ``dp_accounting`` (0.6):
     ``RdpAccountant`` for ``rdp`` rows, the PLD accountant for ``prv`` rows
     (``accountant=`` forces ``rdp`` or ``pld`` for all rows). The DpEvent of a row is
     ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), steps)``,
     ``GaussianDpEvent(σ)`` when ``q = 1``.

4. Budget: a row overshoots when its recorded or Opacus ε exceeds the budget by more
   than 1e-9 relative (the server's own refusal rule), or when even the most lenient
   reading of the independent ε (its lower tolerance edge) does.

Measured disagreement between the accountants (and the tolerance)
-----------------------------------------------------------------
Grid: σ 0.5–10 (25 values, geometric), q 0.001–1 (19), steps 1–10000 (25), δ 1e-5, 1e-6,
1e-7; PLD/PRV on a coarser grid (σ 8 values, q 6, steps 5, same δ; 621 points with
RDP-ε ≤ 100, those above skipped: PRV and PLD take minutes and gigabytes there).

* **Opacus RDP vs dp_accounting RDP.** dp_accounting is given Opacus' orders (1.1–10.9
  by 0.1, 12–63) so both minimise over the same orders; its own default adds 11 and
  128–1024, which makes it up to 28× *smaller* at tiny ε (σ=10, q=0.001, one step), a
  difference of order grids, not of maths. With the same orders the two agree exactly at
  integer orders; at fractional orders dp_accounting's series (``_compute_log_a_frac``)
  is larger than the exact value (Opacus matches mpmath quadrature to 1e-11 at
  σ=1, q=0.1; dp_accounting is 20 % high at α=1.6) and gives up (∞) below α≈1.5 for
  small σ. So dp_accounting's ε is never below Opacus' (measured max of
  (opacus − dp)/dp: 2.3e-12) and above it by, at most (measured (dp − opacus)/dp, by dp's ε):

  ====================  ==========  ===================================  ===========
  independent ε         measured    worst point (σ, q, steps, δ)         tolerance
  ====================  ==========  ===================================  ===========
  ≤ 2                   1.9e-5      8.83, 0.464, 68, 1e-5                1e-4
  (2, 5]                0.40 %      10, 0.464, 464, 1e-5                 1 %
  (5, 10]               1.5 %       4.73, 0.464, 316, 1e-5               3 %
  (10, 20]              4.7 %       3.25, 0.464, 464, 1e-5               10 %
  (20, 50]              11.1 %      0.57, 0.215, 68, 1e-5                25 %
  (50, 100]             25.3 %      0.57, 0.215, 146, 1e-5               50 %
  > 100                 67 %        0.5, 0.215, 10000, 1e-5              not checked
  ====================  ==========  ===================================  ===========

  Tolerance: the recorded ε may lie below the independent ε by the last column (2× the
  measurement) and above it by 1e-6 relative; plus 1e-9 absolute both ways.
* **Opacus PRV vs dp_accounting PLD** (``value_discretization_interval`` 1e-4,
  pessimistic): PRV − PLD ∈ [+0.0068, +0.0125] (PRV reports the upper end of its ±0.01
  error band). Tolerance: recorded ∈ [PLD − 0.005, PLD + 0.025].
* Forced cross pairs: Opacus RDP ≥ PRV + 0.011 and RDP ≥ PLD + 0.021 everywhere measured,
  so a ``prv`` row must not exceed the independent RDP ε (recorded ≤ RDP, 1e-6 relative),
  and an ``rdp`` row must not fall below the PLD ε by more than 0.005; the other side is
  not checked (the looser accountant says nothing about how tight the other is).

Cost, and what is checked exactly
---------------------------------
RDP rows are checked exactly, every row, both ways: RDP is additive in steps, so each
distinct ``(σ, q)`` costs one curve per accountant (~0.05–0.2 s), each row a sum and a
conversion. PRV and PLD cost ~0.3–0.6 s *per distinct composed history* (Opacus' PRV
builds its grid each time; the PLD is FFT-composed from a cached one-step PLD), and many
rows share a history (same ``(σ, q)``, same number of participations), so each distinct
history is computed once. ``prv`` rows (and all rows under ``accountant="pld"``) are
checked exactly — Opacus PRV and dp_accounting PLD — for at most ``max_exact`` distinct
histories (default 100; ``None``: all), chosen in this order: the last row of each who
(highest ε first), then the other rows (highest ε first); a row whose history was
already computed is checked at no cost. Every other ``prv`` row is *bracketed*: its ε
must lie between the who's previous recorded ε (minus 0.005) and Opacus' RDP ε of the
same history (RDP ≥ PRV, above). The report counts the rows checked each way.

Timings, ``audit_run`` on this project's 2-core box (imports included, ~3 s), synthetic
runs written like the server's: 100 rounds × 100 of 1,000 clients = 10,000 rows, σ = 1.1,
δ = 1e-5; ``record``: q = 1/⌈n/16⌉ for n ∈ [20, 700] records (44 distinct q), 2 epochs;
``user-local``: q = 1, one step; ``user-central``: 100 server rows, q = 0.01.

=============  ========================  =======================================
mode           rdp (all rows exact)      prv, max_exact = 100
=============  ========================  =======================================
record         10 s                      73 s (1,027 rows exact, 8,973 bracketed;
                                         all 10,000 exact: 240 s)
user-local     6 s                       27 s (all rows exact)
user-central   3 s                       23 s (all 100 rows exact)
=============  ========================  =======================================

``accountant="pld"`` on the record/rdp run: 38 s. ``write_audit`` adds ~1 s.

Output: ``audit.json`` (``inf`` written as the string ``"inf"``) and ``epsilon.png``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from fedrec.core.privacy import accounting
from fedrec.core.privacy.ledger import (
    ANCHOR_HEAD,
    ANCHOR_ROWS,
    LEDGER_FILE,
    SERVER,
    LedgerError,
    LedgerRow,
    anchor_problems,
    check_entry,
    read_ledger,
    unanchored_rows,
    verify_chain,
)
from fedrec.core.report import METRICS_FILE, write_json_atomic

AUDIT_FILE = "audit.json"
PLOT_FILE = "epsilon.png"
INDEPENDENT = ("rdp", "pld")
DEFAULT_MAX_EXACT = 100
# Opacus RDPAccountant.DEFAULT_ALPHAS, given to dp_accounting so both minimise over the same orders
ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
PLD_DISCRETIZATION = 1e-4  # dp_accounting's default; 1e-3 drifts up to 0.085 from it at 10⁴ steps
BUDGET_REL = 1e-9  # the server refuses a round whose ε exceeds the budget by more than this


class AuditError(ValueError):
    """The run cannot be audited (no run directory, no ledger, unreadable files)."""


# --- tolerance ------------------------------------------------------------------------

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
    """Slack of each check (see the module docstring for the measurements behind it).

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
    ("rdp", "rdp"): Band(below=((2.0, 1e-4), (5.0, 0.01), (10.0, 0.03), (20.0, 0.10), (50.0, 0.25),
                                (100.0, 0.50)),
                         above=1e-6, below_abs=1e-9, above_abs=1e-9),
    ("prv", "pld"): Band(below=((math.inf, 0.0),), above=0.0, below_abs=0.005, above_abs=0.025),
    ("prv", "rdp"): Band(below=(), above=1e-6, below_abs=0.0, above_abs=1e-9),
    ("rdp", "pld"): Band(below=((math.inf, 0.0),), above=math.inf, below_abs=0.005, above_abs=0.0),
})
# a prv row not checked exactly: recorded ≤ Opacus RDP ε of its history, and ≥ the previous row − this
BRACKET_ABS = 0.005


# --- the independent accountants (dp_accounting) ------------------------------------

@contextmanager
def _quiet_absl() -> Iterator[None]:
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


def _spends(sigma: float, rate: float, steps: int) -> bool:
    """False for a run that touches nobody (q = 0, no steps) or adds infinite noise."""
    return steps > 0 and rate > 0 and not math.isinf(sigma)


def _merge(history: Sequence[accounting.Step]) -> tuple[accounting.Step, ...]:
    """Drop runs that spend nothing; merge consecutive runs with the same ``(σ, q)``."""
    merged: list[accounting.Step] = []
    for sigma, rate, steps in history:
        if not _spends(sigma, rate, steps):
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
    with _quiet_absl():
        engine.compose(dp_event(sigma, rate, 1))
    curve = np.array(engine._rdp, dtype=np.float64)
    curve.setflags(write=False)
    return curve


class _Independent:
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

        with _quiet_absl():
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


def _opacus_epsilon(history: Sequence[accounting.Step], delta: float, name: str) -> float:
    """The training path's accountant on the spending part of ``history``."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # PRV's log(1 − q) at q = 1
        return accounting.epsilon([run for run in history if _spends(*run)], delta, name)


# --- report ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """One thing wrong with one row. ``kind``: invalid, opacus, independent, bound, overshoot."""

    kind: str
    seq: int
    round: int
    who: str
    message: str


@dataclass
class WhoAudit:
    """One who's rows on one unit, in ``seq`` order, with the recomputed ε (None: not recomputed)."""

    who: str
    unit: str
    mode: str
    accountant: str
    delta: float
    budget: float | None
    seqs: list[int] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    recorded: list[float] = field(default_factory=list)
    opacus: list[float | None] = field(default_factory=list)
    independent: list[float | None] = field(default_factory=list)
    findings: int = 0

    @property
    def max_epsilon(self) -> float:
        return max(self.recorded, default=0.0)


@dataclass
class AuditReport:
    """Everything ``fedrec audit`` found; ``ok`` is False when anything is wrong."""

    run_dir: Path
    rows: int
    chain_problems: list[str]
    anchor_problems: list[str]
    anchors: int
    notes: list[str]
    whos: list[WhoAudit]
    mismatches: list[Finding]
    overshoots: list[Finding]
    forced_accountant: str | None
    tolerance: Tolerance
    max_exact: int | None
    rows_opacus_checked: int
    rows_independent_checked: int
    rows_bracketed: int
    seconds: float

    @property
    def chain_ok(self) -> bool:
        return not self.chain_problems

    @property
    def anchors_ok(self) -> bool:
        return not self.anchor_problems

    @property
    def ok(self) -> bool:
        return self.chain_ok and self.anchors_ok and not self.mismatches and not self.overshoots

    def epsilon_by_round(self, server: bool) -> dict[int, float]:
        """Max over clients (``server=False``) or the server's ε as of each round."""
        groups = [w for w in self.whos if (w.who == SERVER) == server]
        rounds = sorted({r for w in groups for r in w.rounds})
        return {r: float(v) for r, v in zip(rounds, _max_as_of(groups, rounds))}


def _max_as_of(groups: Sequence[WhoAudit], rounds: Sequence[int]) -> np.ndarray:
    """For each round r: max over groups of the group's largest recorded ε in rounds ≤ r."""
    best = np.zeros(len(rounds))
    grid = np.asarray(rounds)
    for group in groups:
        order = np.argsort(group.rounds, kind="stable")
        group_rounds = np.asarray(group.rounds)[order]
        running = np.maximum.accumulate(np.asarray(group.recorded, dtype=np.float64)[order])
        at = np.searchsorted(group_rounds, grid, side="right") - 1
        best = np.maximum(best, np.where(at >= 0, running[np.maximum(at, 0)], 0.0))
    return best


# --- the audit ------------------------------------------------------------------------

def audit_run(run_dir: Path, accountant: str | None = None, tolerance: Tolerance = DEFAULT_TOLERANCE,
              max_exact: int | None = DEFAULT_MAX_EXACT) -> AuditReport:
    """Audit the ledger of the run in ``run_dir`` (see the module docstring).

    ``accountant``: ``rdp`` or ``pld`` forces the independent accountant for all rows.
    ``max_exact``: distinct histories computed with PRV/PLD; ``None`` for all of them.
    """
    started = time.perf_counter()
    if accountant is not None and accountant not in INDEPENDENT:
        raise AuditError(f"unknown independent accountant {accountant!r}: choose one of {INDEPENDENT}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AuditError(f"{run_dir}: no such run directory")
    ledger_path = run_dir / LEDGER_FILE
    if not ledger_path.is_file():
        raise AuditError(f"{run_dir}: this run has no privacy ledger ({LEDGER_FILE} not found): "
                         "was it run with --dp off?")
    try:
        rows = read_ledger(ledger_path)
    except LedgerError as error:
        raise AuditError(str(error)) from error
    notes: list[str] = []
    anchors = _read_anchors(run_dir / METRICS_FILE, notes)
    anchor_issues = anchor_problems(rows, [a for a in anchors if isinstance(a, tuple)])
    anchor_issues += [a for a in anchors if isinstance(a, str)]
    valid_anchors = [a for a in anchors if isinstance(a, tuple)]
    if valid_anchors:
        tail = unanchored_rows(rows, valid_anchors)
        if tail:
            notes.append(f"{tail} row(s) after the last anchor: allowed (a crash between the ledger "
                         "and the metrics write), but their deletion would not be detected")
    elif rows:  # a run that spent privacy and anchored none of it: rows may have been cut off the end
        anchor_issues.append(f"{len(rows)} ledger rows but no anchor in {METRICS_FILE} (missing, or its "
                             "ledger_rows/ledger_head keys were removed): deleted newest rows could not be "
                             "detected (a run that crashed before its first round is logged also ends here)")
    if not rows:
        notes.append("the ledger is empty")

    check = _Check(accountant, tolerance, max_exact)
    with _quiet_absl():
        whos = check.run(rows)
    findings = check.findings
    per_who = defaultdict(int)
    for finding in findings:
        per_who[finding.who] += 1
    for who in whos:
        who.findings = per_who[who.who]
    return AuditReport(
        run_dir=run_dir, rows=len(rows), chain_problems=verify_chain(rows), anchor_problems=anchor_issues,
        anchors=len(valid_anchors), notes=notes, whos=whos,
        mismatches=[f for f in findings if f.kind != "overshoot"],
        overshoots=[f for f in findings if f.kind == "overshoot"],
        forced_accountant=accountant, tolerance=tolerance, max_exact=max_exact,
        rows_opacus_checked=check.opacus_checked, rows_independent_checked=check.independent_checked,
        rows_bracketed=check.bracketed, seconds=time.perf_counter() - started)


def _read_anchors(path: Path, notes: list[str]) -> list[tuple[int, str] | str]:
    """Anchors ``(rows, head)`` of ``metrics.jsonl``, and a message for each malformed one."""
    if not path.exists():
        notes.append(f"no {METRICS_FILE}: no anchors, deletion of the newest rows cannot be detected")
        return []
    anchors: list[tuple[int, str] | str] = []
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise AuditError(f"{path} line {number}: not JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise AuditError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
            if ANCHOR_ROWS not in row and ANCHOR_HEAD not in row:
                continue
            count, head = row.get(ANCHOR_ROWS), row.get(ANCHOR_HEAD)
            if (isinstance(count, int) and not isinstance(count, bool) and count >= 0 and isinstance(head, str)
                    and len(head) == 64):
                anchors.append((count, head))
            else:
                anchors.append(f"{path.name} line {number}: malformed anchor "
                               f"({ANCHOR_ROWS}={count!r}, {ANCHOR_HEAD}={head!r})")
    return anchors


class _Pending(NamedTuple):
    """A row whose ε needs PRV or PLD: its group, place in it, merged history, previous ε."""

    audit: WhoAudit
    index: int
    row: LedgerRow
    history: tuple[accounting.Step, ...]
    previous: float


class _Check:
    """Recomputes each group's ε row by row and collects findings."""

    def __init__(self, forced: str | None, tolerance: Tolerance, max_exact: int | None) -> None:
        self.forced = forced
        self.tolerance = tolerance
        self.max_exact = max_exact
        self.independent = _Independent()
        self.findings: list[Finding] = []
        self.opacus_checked = self.independent_checked = self.bracketed = 0

    def find(self, kind: str, row: LedgerRow, message: str) -> None:
        self.findings.append(Finding(kind, row.seq, row.round, row.who, message))

    def independent_name(self, row: LedgerRow) -> str:
        return self.forced or ("rdp" if row.accountant == "rdp" else "pld")

    def run(self, rows: Sequence[LedgerRow]) -> list[WhoAudit]:
        groups: dict[tuple[str, str], list[LedgerRow]] = defaultdict(list)
        for row in rows:
            try:
                check_entry(row)
            except ValueError as error:
                self.find("invalid", row, str(error))
            groups[(row.who, row.unit)].append(row)
        # pass 1: every cheap (RDP) number; rows that need PRV/PLD are collected
        audits: list[WhoAudit] = []
        pending: list[_Pending] = []
        for (who, unit), members in sorted(groups.items()):
            audit = WhoAudit(who=who, unit=unit, mode=members[-1].mode, accountant=members[-1].accountant,
                             delta=members[-1].delta, budget=members[-1].budget)
            audits.append(audit)
            pending += self._cheap(audit, members)
        # pass 2: PRV/PLD for the chosen histories, the bracket for the other PRV rows; budgets
        self._exact(pending)
        self._bracket([item for item in pending if item.row.accountant == "prv"
                       and item.audit.opacus[item.index] is None])
        for audit, members in zip(audits, (groups[(a.who, a.unit)] for a in audits)):
            self._budget(audit, members)
        return audits

    def _cheap(self, audit: WhoAudit, members: list[LedgerRow]) -> list[_Pending]:
        history: list[accounting.Step] = []
        dp_rdp = np.zeros(len(ORDERS))
        spent, usable = False, True
        pending: list[_Pending] = []
        for index, row in enumerate(members):
            audit.seqs.append(row.seq)
            audit.rounds.append(row.round)
            audit.recorded.append(row.epsilon)
            run = (row.noise_multiplier, row.sample_rate, row.steps)
            usable = usable and _computable(row)
            if not usable:  # nonsense parameters (already reported): no ε can be derived from here on
                audit.opacus.append(None)
                audit.independent.append(None)
                continue
            history.append(run)
            if _spends(*run):  # RDP is additive: Σ steps · (one step's curve); σ = 0 gives ∞
                spent = True
                dp_rdp = dp_rdp + row.steps * self.independent.rdp_curve(row.noise_multiplier, row.sample_rate)
            opacus = None
            if row.accountant == "rdp":
                opacus = _opacus_epsilon(history, row.delta, "rdp")
                self._compare_opacus(row, opacus)
            independent = None
            if self.independent_name(row) == "rdp":
                independent = self.independent.rdp_epsilon(dp_rdp, row.delta) if spent else 0.0
                self._compare_independent(row, independent, "rdp")
            audit.opacus.append(opacus)
            audit.independent.append(independent)
            if row.accountant == "prv" or self.independent_name(row) == "pld":
                previous = max(audit.recorded[:-1], default=0.0)
                pending.append(_Pending(audit, index, row, _merge(history), previous))
        return pending

    def _exact(self, pending: list[_Pending]) -> None:
        """PRV/PLD for at most ``max_exact`` distinct histories: each who's last row first."""
        last = {(item.audit.who, item.audit.unit): item for item in pending}
        finals = sorted(last.values(), key=lambda item: -_finite(item.row.epsilon))
        others = sorted((item for item in pending if last[(item.audit.who, item.audit.unit)] is not item),
                        key=lambda item: -_finite(item.row.epsilon))
        computed: set[tuple[accounting.Step, ...]] = set()
        for item in [*finals, *others]:
            if item.history not in computed:
                if self.max_exact is not None and len(computed) >= self.max_exact:
                    continue
                computed.add(item.history)
            row = item.row
            if row.accountant == "prv":
                opacus = _opacus_epsilon(item.history, row.delta, "prv")
                item.audit.opacus[item.index] = opacus
                self._compare_opacus(row, opacus)
            if self.independent_name(row) == "pld":
                independent = self.independent.pld_epsilon(item.history, row.delta)
                item.audit.independent[item.index] = independent
                self._compare_independent(row, independent, "pld")

    def _bracket(self, pending: list[_Pending]) -> None:
        """PRV rows not computed exactly: previous ε − slack ≤ recorded ≤ Opacus RDP ε of the history."""
        for item in pending:
            self.bracketed += 1
            rdp = _opacus_epsilon(item.history, item.row.delta, "rdp")
            if not item.previous - BRACKET_ABS <= item.row.epsilon <= rdp * (1 + 1e-6) + 1e-9:
                self.find("bound", item.row, f"recorded PRV ε={item.row.epsilon:.6g} is outside "
                                             f"[{item.previous:.6g}, {rdp:.6g}] (the who's previous ε, the "
                                             "RDP bound of its history)")

    def _compare_opacus(self, row: LedgerRow, recomputed: float) -> None:
        self.opacus_checked += 1
        if not self.tolerance.opacus_agrees(row.epsilon, recomputed):
            why = ("the who's accountant composed mechanism runs that are not in the ledger, or the row was "
                   "altered" if row.epsilon > recomputed else
                   "the recorded ε is below what its rows compose to: under-reported or altered")
            self.find("opacus", row, f"recorded ε={row.epsilon:.6g} but Opacus {row.accountant} on the "
                                     f"ledger's rows gives {recomputed:.6g}: {why}")

    def _compare_independent(self, row: LedgerRow, independent: float, name: str) -> None:
        self.independent_checked += 1
        if not self.tolerance.band(row.accountant, name).agrees(row.epsilon, independent):
            self.find("independent", row, f"recorded ε={row.epsilon:.6g} ({row.accountant}) is outside the "
                                          f"tolerance of dp_accounting {name} ε={independent:.6g}")

    def _budget(self, audit: WhoAudit, members: list[LedgerRow]) -> None:
        for index, row in enumerate(members):
            opacus, independent = audit.opacus[index], audit.independent[index]
            if row.budget is None:
                continue
            limit = row.budget * (1 + BUDGET_REL)
            lenient = None
            if independent is not None:
                name = self.independent_name(row)
                lenient = self.tolerance.band(row.accountant, name).low(independent)
            over = [(label, value) for label, value in (("recorded", row.epsilon), ("Opacus", opacus),
                                                        ("independent (lower edge)", lenient))
                    if value is not None and value > limit]
            if over:
                said = ", ".join(f"{label} ε={value:.6g}" for label, value in over)
                self.find("overshoot", row, f"{said} exceeds the budget ε={row.budget:g}")


def _computable(row: LedgerRow) -> bool:
    """Parameters an accountant can take (not necessarily valid ledger values)."""
    return (row.noise_multiplier >= 0 and 0 <= row.sample_rate <= 1 and row.steps >= 0
            and 0 < row.delta < 1)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 1e300


# --- output ---------------------------------------------------------------------------

def _json_number(value: float | None) -> float | str | None:
    """JSON has no infinity: ∞ is written as the string "inf" (NaN as null)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def report_dict(report: AuditReport) -> dict[str, Any]:
    """``audit.json``'s content; ε lists are aligned with ``seqs`` and ``rounds``."""
    clients = [w for w in report.whos if w.who != SERVER]
    top = max(clients, key=lambda w: _finite(w.max_epsilon), default=None)
    server = [w for w in report.whos if w.who == SERVER]
    return {
        "ok": report.ok,
        "run_dir": str(report.run_dir),
        "ledger_rows": report.rows,
        "chain_ok": report.chain_ok,
        "chain_problems": report.chain_problems,
        "anchors_ok": report.anchors_ok,
        "anchors": report.anchors,
        "anchor_problems": report.anchor_problems,
        "notes": report.notes,
        "independent_accountant": report.forced_accountant or "per row (rdp→rdp, prv→pld)",
        "max_exact": report.max_exact,
        "rows_opacus_checked": report.rows_opacus_checked,
        "rows_independent_checked": report.rows_independent_checked,
        "rows_bracketed": report.rows_bracketed,
        "seconds": round(report.seconds, 3),
        "tolerance": {
            "opacus_rel": report.tolerance.opacus_rel,
            "bands": {f"{a}->{b}": {"below": [[_json_number(u), s] for u, s in band.below],
                                    "above": _json_number(band.above), "below_abs": band.below_abs,
                                    "above_abs": band.above_abs}
                      for (a, b), band in report.tolerance.bands.items()},
        },
        "mismatches": [vars(f) for f in report.mismatches],
        "overshoots": [vars(f) for f in report.overshoots],
        "global": {
            "clients": len({w.who for w in clients}),
            "max_client_epsilon": _json_number(top.max_epsilon if top else None),
            "max_client": top.who if top else None,
            "server_epsilon": _json_number(max((w.max_epsilon for w in server), default=None)),
            "client_max_epsilon_by_round": {str(r): _json_number(v)
                                            for r, v in report.epsilon_by_round(server=False).items()},
            "server_epsilon_by_round": {str(r): _json_number(v)
                                        for r, v in report.epsilon_by_round(server=True).items()},
        },
        "whos": [{
            "who": w.who, "unit": w.unit, "mode": w.mode, "accountant": w.accountant, "delta": w.delta,
            "budget": w.budget, "max_epsilon": _json_number(w.max_epsilon), "findings": w.findings,
            "seqs": w.seqs, "rounds": w.rounds,
            "recorded": [_json_number(v) for v in w.recorded],
            "opacus": [_json_number(v) for v in w.opacus],
            "independent": [_json_number(v) for v in w.independent],
        } for w in report.whos],
    }


def write_audit(report: AuditReport, run_dir: Path) -> None:
    """Write ``run_dir/audit.json`` and ``run_dir/epsilon.png``."""
    run_dir = Path(run_dir)
    write_json_atomic(run_dir / AUDIT_FILE, report_dict(report))
    plot_epsilon(report, run_dir / PLOT_FILE)


def plot_epsilon(report: AuditReport, path: Path) -> None:
    """ε by round: a thin step line per client, their max bold, the server's line, budgets
    dashed, rows with findings marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    fig, ax = plt.subplots(figsize=(8, 4.5))
    clients = [w for w in report.whos if w.who != SERVER]
    lines = [_steps(w.rounds, w.recorded) for w in clients]
    if lines:
        alpha = max(0.04, min(0.5, 8 / len(lines)))
        ax.add_collection(LineCollection(lines, colors="tab:blue", linewidths=0.6, alpha=alpha))
        by_round = report.epsilon_by_round(server=False)
        ax.plot(list(by_round), _plottable(list(by_round.values())), color="black", linewidth=2.2,
                label=f"max over {len(clients)} client(s)")
    for w in report.whos:
        if w.who == SERVER:
            ax.plot(w.rounds, _plottable(w.recorded), color="tab:red", linewidth=2.2, marker=".",
                    label=f"server ({w.mode})")
    for budget in sorted({w.budget for w in report.whos if w.budget is not None}):
        ax.axhline(budget, color="grey", linestyle="--", linewidth=1.2, label=f"budget ε={budget:g}")
    flagged = {f.seq for f in [*report.mismatches, *report.overshoots]}
    marks = [(r, e) for w in report.whos for s, r, e in zip(w.seqs, w.rounds, w.recorded)
             if s in flagged and math.isfinite(e)]
    if marks:
        ax.scatter(*zip(*marks), color="red", marker="x", s=30, zorder=5, label="row with a finding")
    ax.autoscale_view()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("round")
    deltas = sorted({w.delta for w in report.whos})
    ax.set_ylabel("ε" + (f" at δ={deltas[0]:g}" if len(deltas) == 1 else ""))
    ax.set_title(f"privacy spent — audit {'ok' if report.ok else 'FAILED'}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _steps(rounds: Sequence[int], values: Sequence[float]) -> np.ndarray:
    """A step path through ``(round, ε)``: ε holds until the who's next row. Shape (2n − 1, 2)."""
    x = np.repeat(np.asarray(rounds, dtype=np.float64), 2)[1:]
    y = np.repeat(_plottable(values), 2)[:-1]
    return np.column_stack([x, y])


def _plottable(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(array), array, np.nan)


def print_audit(report: AuditReport, console: Any) -> None:
    """A short table of the audit on a rich console, then the first findings."""
    from rich.markup import escape
    from rich.table import Table

    def mark(ok: bool) -> str:
        return "[green]ok[/green]" if ok else "[red]FAILED[/red]"

    def number(value: float) -> str:
        return "∞" if math.isinf(value) else f"{value:.4g}"

    clients = [w for w in report.whos if w.who != SERVER]
    servers = [w for w in report.whos if w.who == SERVER]
    table = Table(title=escape(f"privacy audit of {report.run_dir}"), show_header=False)
    table.add_row("ledger rows", str(report.rows))
    table.add_row("hash chain", mark(report.chain_ok) + (f" ({len(report.chain_problems)} problems)"
                                                        if report.chain_problems else ""))
    table.add_row("anchors", mark(report.anchors_ok) + f" ({report.anchors} checked)")
    if report.whos:
        table.add_row("unit · δ · accountant", escape(", ".join(sorted(
            {f"{w.unit} · {w.delta:g} · {w.accountant}" for w in report.whos}))))
    table.add_row("ε recomputed", f"Opacus {report.rows_opacus_checked}/{report.rows} rows, dp_accounting "
                                  f"{report.rows_independent_checked}/{report.rows}, bracketed "
                                  f"{report.rows_bracketed}")
    table.add_row("mismatches", mark(not report.mismatches) + f" ({len(report.mismatches)})")
    table.add_row("budget overshoots", mark(not report.overshoots) + f" ({len(report.overshoots)})")
    if clients:
        top = max(clients, key=lambda w: _finite(w.max_epsilon))
        table.add_row("max client ε", f"{number(top.max_epsilon)} ({escape(top.who)}; "
                                      f"{len({w.who for w in clients})} clients)")
    if servers:
        table.add_row("server ε", number(max(w.max_epsilon for w in servers)))
    table.add_row("verdict", mark(report.ok))
    console.print(table)
    for line in [*report.chain_problems, *report.anchor_problems][:5]:
        console.print(f"[red]•[/red] {escape(line)}")
    findings = [*report.mismatches, *report.overshoots]
    for finding in findings[:5]:
        console.print(f"[red]•[/red] {finding.kind}: {escape(finding.message)} "
                      f"(row {finding.seq}, round {finding.round}, {escape(finding.who)})")
    if len(findings) > 5:
        console.print(f"… and {len(findings) - 5} more in {AUDIT_FILE}")
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
