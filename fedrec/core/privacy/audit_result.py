"""What ``fedrec audit`` found: findings, each who's recomputed ε history, the report.

Pure data (no drawing, no printing): ``audit.json`` is written from it by
:mod:`fedrec.core.privacy.audit_json`, the plot and the console table by
:mod:`fedrec.reporting.audit_report`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fedrec.core.privacy.audit_accounting import Tolerance
from fedrec.core.privacy.ledger_rows import SERVER


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


def finite_key(value: float) -> float:
    """``value`` with ∞ mapped to 1e300, to rank ε values that may be infinite."""
    return value if math.isfinite(value) else 1e300
