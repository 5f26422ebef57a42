"""``fedrec audit RUN_DIR``: check a run's privacy ledger and re-derive every ε in it.

Modules: this one is the checking core; :mod:`fedrec.core.privacy.audit_signatures`
checks the signed heads and the devices' countersignatures (items 2 and 3 below);
:mod:`fedrec.core.privacy.audit_crosscheck` checks the ledger against the run's plan,
config, summary and checkpoint;
:mod:`fedrec.core.privacy.audit_report` writes ``audit.json``, ``epsilon.png`` and the
console table.

What is checked
---------------
1. The ledger's hash chain, and the anchors ``(ledger_rows, ledger_head)`` the server
   wrote into ``metrics.jsonl`` each round (:mod:`fedrec.core.privacy.ledger`).
2. Signed heads (:meth:`fedrec.core.privacy.ledger.PrivacyLedger.sign_head`): every
   round with ledger rows or an anchor has a signed head; each head's statement is
   canonical, names this ledger's run id, and its ``(rows, head)`` match the ledger at
   that point (and the round's anchor); the signature verifies — against the trusted
   public key given as ``verify_key`` (``--verify-key``), else against the run's own
   ``ledger-signing.pub`` (a note says this proves self-consistency only: a forger can
   replace that file), else against the key stored beside each head (the same
   caveat); every head must carry that key. The statement's ``plan_sha256`` must be the
   sha256 of the run's ``privacy_plan.json``, and the last head's ``config_sha256`` that
   of ``run_config.json`` (``""`` when absent; earlier heads may name an earlier
   ``run_config.json``, which a resume rewrites: a note). When ``summary.json`` exists (the run
   finished) the last head must be ``final`` and cover every row: this catches the
   newest rows deleted together with their metrics line. A ledger with rows and no
   signed head fails ("missing signature").
3. Device countersignatures: with ``device_keys`` (``--device-keys DIR``), every row with
   a ``device_signature`` must verify — ECDSA over
   :func:`fedrec.core.privacy.signing.release_statement` of the row, with ``who_user``
   the row's ``who`` — with one of the OpenSSH public keys ``DIR/*.pub``.
4. Cross-checks against the run's files (:mod:`fedrec.core.privacy.audit_crosscheck`).
5. Every row's parameters are valid (as ``PrivacyLedger.append`` demands).
6. Rows are grouped by ``(who, unit)`` in ``seq`` order; the ε after row ``k`` is the
   composition of the group's rows ``1..k``, each the Poisson-subsampled Gaussian
   ``(σ, q, steps)`` (``q = 1``: the plain Gaussian), at the row's δ (σ is noise std /
   sensitivity under the row's relation, so add/remove accounting applies to both
   relations). It is recomputed twice:

   * with the row's own Opacus accountant, :func:`fedrec.core.privacy.accounting.epsilon`
     — this must give the recorded ε to ``opacus_rel`` = 1e-6 relative; a miss means
     the recorded ε, its parameters, or the ledger's rows were altered, or the who's
     accountant saw mechanism runs that are not in the ledger;
   * independently of the training path, with Google's ``dp_accounting`` (0.6):
     ``RdpAccountant`` for ``rdp`` rows, the PLD accountant for ``prv`` rows
     (``accountant=`` forces ``rdp`` or ``pld`` for all rows). The DpEvent of a row is
     ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), steps)``,
     ``GaussianDpEvent(σ)`` when ``q = 1``.

7. Budget: a row overshoots when its recorded or Opacus ε exceeds the budget by more
   than 1e-9 relative (the server's own refusal rule), or when even the most lenient
   reading of the independent ε (its lower tolerance edge) does.
8. PLD ε of each who's whole history (dp_accounting's PLD accountant, add/remove on the
   rows' ``(σ, q, steps)``), reported beside the recorded (RDP) final ε as the tighter
   figure (``pld_epsilon``; for at most ``max_exact`` distinct histories, the highest
   ε first).

Measured disagreement between the accountants (and the tolerance)
-----------------------------------------------------------------
* **Opacus RDP vs dp_accounting RDP.** Both get the same integer orders 2–128
  (:data:`fedrec.core.privacy.accounting.RDP_ORDERS`), where both evaluate the same
  closed form. Measured on σ 0.5–10 (25 values, geometric) × q 0.001–1 (19, geometric)
  × steps 1–10000 (24 distinct, geometric) × δ ∈ {1e-5, 1e-6, 1e-7} = 34,200 points:
  largest relative difference 1.7e-11 (σ=10, q=0.00147, 10000 steps, δ=1e-5, ε=0.0585);
  ≤ 5e-13 wherever ε > 2; no point disagrees by more than 1e-4. Tolerance: 1e-4
  relative both ways (plus 1e-9 absolute).
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
distinct ``(σ, q)`` costs one curve per accountant, each row a sum and a conversion.
PRV and PLD cost ~0.3–0.6 s *per distinct composed history* (Opacus' PRV builds its grid
each time; the PLD is FFT-composed from a cached one-step PLD), and many rows share a
history (same ``(σ, q)``, same number of participations), so each distinct history is
computed once. ``prv`` rows (and all rows under ``accountant="pld"``) are checked
exactly — Opacus PRV and dp_accounting PLD — for at most ``max_exact`` distinct
histories (default 100; ``None``: all), chosen in this order: the last row of each who
(highest ε first), then the other rows (highest ε first); a row whose history was
already computed is checked at no cost. Every other ``prv`` row is *bracketed*: its ε
must lie between the who's previous recorded ε (minus 0.005) and Opacus' RDP ε of the
same history (RDP ≥ PRV, above). The report counts the rows checked each way.
"""

from __future__ import annotations

import json
import math
import os
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
from fedrec.core.privacy.audit_crosscheck import (
    CrossCheckError,
    crosscheck,
    read_run_files,
)
from fedrec.core.privacy.audit_signatures import (
    KeyFileError,
    SignedHeads,
    check_device_signatures,
    device_public_keys,
    trusted_key,
)
from fedrec.core.privacy.ledger import LEDGER_FILE, LedgerError, read_heads, read_ledger
from fedrec.core.privacy.ledger_chain import ANCHOR_HEAD, ANCHOR_ROWS, anchor_problems, unanchored_rows, verify_chain
from fedrec.core.privacy.ledger_rows import SERVER, LedgerRow, check_entry
from fedrec.core.run_files import METRICS_FILE

INDEPENDENT = ("rdp", "pld")
DEFAULT_MAX_EXACT = 100


ORDERS = accounting.RDP_ORDERS  # the orders the recorded RDP ε were minimised over
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
    ("rdp", "rdp"): Band(below=((math.inf, 1e-4),), above=1e-4, below_abs=1e-9, above_abs=1e-9),
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
    """One who's rows on one unit, in ``seq`` order, with the recomputed ε (None: not recomputed).

    ``pld_epsilon``: dp_accounting's PLD ε of the who's whole history at its δ (``None``
    when not computed: past ``max_exact`` distinct histories, or unusable parameters).
    """

    who: str
    unit: str
    mode: str
    accountant: str
    delta: float
    budget: float | None
    relation: str = ""  # "add-remove" or "replace-one", as the rows state it
    seqs: list[int] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    recorded: list[float] = field(default_factory=list)
    opacus: list[float | None] = field(default_factory=list)
    independent: list[float | None] = field(default_factory=list)
    findings: int = 0
    pld_epsilon: float | None = None

    @property
    def max_epsilon(self) -> float:
        return max(self.recorded, default=0.0)

    @property
    def final_epsilon(self) -> float:
        return self.recorded[-1] if self.recorded else 0.0


@dataclass
class AuditReport:
    """Everything ``fedrec audit`` found; ``ok`` is False when anything is wrong.

    ``key_source``: what the head signatures were verified against — ``"trusted"``
    (``verify_key``), ``"run"`` (the run's ``ledger-signing.pub``), ``"embedded"`` (the key
    stored with each head) or ``None`` (no signed heads).
    """

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
    signature_problems: list[str] = field(default_factory=list)
    device_problems: list[str] = field(default_factory=list)
    crosscheck_problems: list[str] = field(default_factory=list)
    heads: int = 0
    key_source: str | None = None
    device_signatures_checked: int = 0

    @property
    def chain_ok(self) -> bool:
        return not self.chain_problems

    @property
    def anchors_ok(self) -> bool:
        return not self.anchor_problems

    @property
    def signatures_ok(self) -> bool:
        return not self.signature_problems and not self.device_problems

    @property
    def crosscheck_ok(self) -> bool:
        return not self.crosscheck_problems

    @property
    def ok(self) -> bool:
        return (self.chain_ok and self.anchors_ok and self.signatures_ok and self.crosscheck_ok
                and not self.mismatches and not self.overshoots)

    def problems(self) -> list[str]:
        """Every problem as one line each (findings with their row)."""
        return [*self.chain_problems, *self.anchor_problems, *self.signature_problems, *self.device_problems,
                *self.crosscheck_problems,
                *(f"{f.kind}: {f.message} (row seq={f.seq}, round {f.round}, {f.who})"
                  for f in [*self.mismatches, *self.overshoots])]

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
              max_exact: int | None = DEFAULT_MAX_EXACT, verify_key: Path | None = None,
              device_keys: Path | None = None) -> AuditReport:
    """Audit the ledger of the run in ``run_dir`` (see the module docstring).

    ``accountant``: ``rdp`` or ``pld`` forces the independent accountant for all rows.
    ``max_exact``: distinct histories computed with PRV/PLD; ``None`` for all of them.
    ``verify_key``: a trusted ledger public key file (hex, as ``signing.write_public_key``
    writes it). ``device_keys``: a directory of the devices' OpenSSH ``*.pub`` keys.
    Raises ``AuditError`` when the run cannot be audited (no run directory, no ledger,
    unreadable files, a missing or malformed key file).
    """
    started = time.perf_counter()
    if accountant is not None and accountant not in INDEPENDENT:
        raise AuditError(f"unknown independent accountant {accountant!r}: choose one of {INDEPENDENT}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AuditError(f"{run_dir}: no such run directory")
    if not os.access(run_dir, os.R_OK | os.X_OK):
        raise AuditError(f"{run_dir}: the run directory is not readable")
    try:
        trusted = trusted_key(verify_key)
        devices = device_public_keys(device_keys)
    except KeyFileError as error:
        raise AuditError(str(error)) from error
    ledger_path = run_dir / LEDGER_FILE
    if not ledger_path.is_file():
        raise AuditError(f"{run_dir}: this run has no privacy ledger ({LEDGER_FILE} not found): "
                         "was it run with --dp off?")
    try:
        rows = read_ledger(ledger_path)
        heads = read_heads(ledger_path)
    except LedgerError as error:
        raise AuditError(str(error)) from error
    notes: list[str] = []
    metrics, anchors = _read_metrics(run_dir / METRICS_FILE, notes)
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

    try:
        files = read_run_files(run_dir, metrics)
    except CrossCheckError as error:
        raise AuditError(str(error)) from error
    signatures = SignedHeads(run_dir, rows, heads, metrics, files.finished, trusted)
    try:
        signature_issues = signatures.check(notes)
    except KeyFileError as error:
        raise AuditError(str(error)) from error
    device_issues, device_checked = check_device_signatures(rows, devices, device_keys, notes)
    cross_issues, cross_notes = crosscheck(files, rows)
    notes += cross_notes

    check = _Check(accountant, tolerance, max_exact)
    with _quiet_absl():
        whos = check.run(rows)
        check.pld_finals(whos, rows)
    findings = check.findings
    per_who: dict[str, int] = defaultdict(int)
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
        rows_bracketed=check.bracketed, seconds=time.perf_counter() - started,
        signature_problems=signature_issues, device_problems=device_issues, crosscheck_problems=cross_issues,
        heads=len(heads), key_source=signatures.key_source, device_signatures_checked=device_checked)


def _read_metrics(path: Path, notes: list[str]) -> tuple[list[dict[str, Any]], list[tuple[int, str] | str]]:
    """``metrics.jsonl``'s lines, and its anchors ``(rows, head)`` with a message for each malformed one."""
    if not path.exists():
        notes.append(f"no {METRICS_FILE}: no anchors, deletion of the newest rows cannot be detected")
        return [], []
    lines: list[dict[str, Any]] = []
    anchors: list[tuple[int, str] | str] = []
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as error:
        raise AuditError(f"{path}: cannot read it ({error.strerror})") from error
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise AuditError(f"{path} line {number}: not JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise AuditError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
            lines.append(row)
            if ANCHOR_ROWS not in row and ANCHOR_HEAD not in row:
                continue
            count, head = row.get(ANCHOR_ROWS), row.get(ANCHOR_HEAD)
            if (isinstance(count, int) and not isinstance(count, bool) and count >= 0 and isinstance(head, str)
                    and len(head) == 64):
                anchors.append((count, head))
            else:
                anchors.append(f"{path.name} line {number}: malformed anchor "
                               f"({ANCHOR_ROWS}={count!r}, {ANCHOR_HEAD}={head!r})")
    return lines, anchors


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
                             delta=members[-1].delta, budget=members[-1].budget, relation=members[-1].relation)
            audits.append(audit)
            pending += self._cheap(audit, members)
        # pass 2: PRV/PLD for the chosen histories, the bracket for the other PRV rows; budgets
        self._exact(pending)
        self._bracket([item for item in pending if item.row.accountant == "prv"
                       and item.audit.opacus[item.index] is None])
        for audit, members in zip(audits, (groups[(a.who, a.unit)] for a in audits)):
            self._budget(audit, members)
        return audits

    def pld_finals(self, audits: list[WhoAudit], rows: Sequence[LedgerRow]) -> None:
        """Each who's PLD ε of its whole history (module docstring item 8), at most ``max_exact``
        distinct histories computed (highest recorded ε first; a history PLD already saw is free)."""
        groups: dict[tuple[str, str], list[LedgerRow]] = defaultdict(list)
        for row in rows:
            groups[(row.who, row.unit)].append(row)
        computed: set[tuple[accounting.Step, ...]] = set()
        for audit in sorted(audits, key=lambda a: -_finite(a.final_epsilon)):
            members = groups[(audit.who, audit.unit)]
            if not all(_computable(row) for row in members):
                continue
            history = _merge([(r.noise_multiplier, r.sample_rate, r.steps) for r in members])
            known = (history, audit.delta) in self.independent._pld_epsilons or not history
            if not known and history not in computed:
                if self.max_exact is not None and len(computed) >= self.max_exact:
                    continue
                computed.add(history)
            audit.pld_epsilon = self.independent.pld_epsilon(history, audit.delta)

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
