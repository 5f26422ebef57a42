"""The ε recompute of ``fedrec audit`` (items 5–8 of :mod:`fedrec.core.privacy.audit`).

Rows are checked for valid parameters (:func:`~fedrec.core.privacy.ledger_rows.check_entry`)
and grouped by ``(who, unit)`` in ``seq`` order; the ε after row ``k`` is the composition of
the group's rows ``1..k`` (:mod:`fedrec.core.privacy.audit_accounting`), compared with the
recorded ε twice: with the row's own Opacus accountant (to ``opacus_rel`` relative) and with
the independent ``dp_accounting`` one (within the pair's :class:`~.audit_accounting.Band`).

What is checked exactly: RDP rows, every row, both ways (RDP is additive in steps, so
each distinct ``(σ, q)`` costs one curve per accountant and each row a sum and a
conversion). PRV and PLD cost a grid per *distinct composed history*, so ``prv`` rows
(and all rows under a forced ``pld``) are checked exactly — Opacus PRV and dp_accounting
PLD — for at most ``max_exact`` distinct histories, chosen in this order: the last row of
each who (highest ε first), then the other rows (highest ε first); a row whose history
was already computed is checked at no cost. Every other ``prv`` row is *bracketed*:
``previous recorded ε − BRACKET_ABS ≤ ε ≤ Opacus RDP ε of the same history`` (RDP ≥ PRV).

Budget: a row overshoots when its recorded or Opacus ε exceeds the budget by more than
``BUDGET_REL`` relative (the server's own refusal rule), or when even the lower edge of
the independent ε's band does. Last, each who's whole history gets its PLD ε
(:meth:`EpsilonCheck.pld_finals`), the tighter figure of the same mechanism.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple, Sequence

import numpy as np

from fedrec.core.privacy import accounting
from fedrec.core.privacy.audit_accounting import (
    BRACKET_ABS,
    ORDERS,
    Independent,
    Tolerance,
    merge_history,
    opacus_epsilon,
    spends,
)
from fedrec.core.privacy.audit_result import Finding, WhoAudit, finite_key
from fedrec.core.privacy.ledger_rows import DISTRIBUTED_MODES, GDP_ACCOUNTANT, LedgerRow, check_entry

BUDGET_REL = 1e-9  # the server refuses a round whose ε exceeds the budget by more than this


class _Pending(NamedTuple):
    """A row whose ε needs PRV or PLD: its group, place in it, merged history, previous ε."""

    audit: WhoAudit
    index: int
    row: LedgerRow
    history: tuple[accounting.Step, ...]
    previous: float


class EpsilonCheck:
    """Recomputes each group's ε row by row and collects findings."""

    def __init__(self, forced: str | None, tolerance: Tolerance, max_exact: int | None) -> None:
        self.forced = forced
        self.tolerance = tolerance
        self.max_exact = max_exact
        self.independent = Independent()
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
            if any(row.mode in DISTRIBUTED_MODES or row.accountant == GDP_ACCOUNTANT for row in members):
                self._distributed(audit, members)
                continue
            pending += self._cheap(audit, members)
        # pass 2: PRV/PLD for the chosen histories, the bracket for the other PRV rows; budgets
        self._exact(pending)
        self._bracket([item for item in pending if item.row.accountant == "prv"
                       and item.audit.opacus[item.index] is None])
        for audit, members in zip(audits, (groups[(a.who, a.unit)] for a in audits)):
            self._budget(audit, members)
        return audits

    def pld_finals(self, audits: list[WhoAudit], rows: Sequence[LedgerRow]) -> None:
        """Each who's PLD ε of its whole history (item 8 of ``audit``), at most ``max_exact``
        distinct histories computed (highest recorded ε first; a history PLD already saw is free)."""
        groups: dict[tuple[str, str], list[LedgerRow]] = defaultdict(list)
        for row in rows:
            groups[(row.who, row.unit)].append(row)
        computed: set[tuple[accounting.Step, ...]] = set()
        for audit in sorted(audits, key=lambda a: -finite_key(a.final_epsilon)):
            members = groups[(audit.who, audit.unit)]
            if (not all(computable(row) for row in members) or audit.mode in DISTRIBUTED_MODES
                    or any(row.accountant == GDP_ACCOUNTANT for row in members)):
                continue  # (the distributed modes: no PLD of the DDG; their ε is the zCDP one above)
            history = merge_history([(r.noise_multiplier, r.sample_rate, r.steps) for r in members])
            known = self.independent.has_pld_epsilon(history, audit.delta) or not history
            if not known and history not in computed:
                if self.max_exact is not None and len(computed) >= self.max_exact:
                    continue
                computed.add(history)
            audit.pld_epsilon = self.independent.pld_epsilon(history, audit.delta)

    def _distributed(self, audit: WhoAudit, members: list[LedgerRow]) -> None:
        """user- and record-distributed rows and dp-groups' ``gdp`` rows: ε recomputed from each
        row's mechanism parameters (:func:`fedrec.core.privacy.distributed_mode.recompute_epsilons`,
        :func:`fedrec.core.privacy.record_ledger.recompute_epsilons` (zCDP),
        :func:`fedrec.core.privacy.correlated_ledger.recompute_epsilons` (GDP)), compared with the
        recorded ε as tightly as an Opacus rerun; no independent accountant exists for them."""
        from fedrec.core.privacy import correlated_ledger, distributed_mode, record_ledger

        def kind(row: LedgerRow) -> str:
            return "dp-groups" if row.accountant == GDP_ACCOUNTANT else row.mode

        mode = next(kind(row) for row in members if row.mode in DISTRIBUTED_MODES or row.accountant == GDP_ACCOUNTANT)
        if any(kind(row) != mode for row in members):
            self.find("invalid", members[-1], f"{members[-1].who} mixes {mode} rows with other modes' rows")
        ours = [row for row in members if kind(row) == mode]
        recompute = {"user-distributed": distributed_mode, "record-distributed": record_ledger,
                     "dp-groups": correlated_ledger}[mode].recompute_epsilons
        recomputed = dict(zip((row.seq for row in ours), recompute(ours)))
        for row in members:
            audit.seqs.append(row.seq)
            audit.rounds.append(row.round)
            audit.recorded.append(row.epsilon)
            eps, problem = recomputed.get(row.seq, (None, f"not a {mode} row"))
            audit.opacus.append(eps)
            audit.independent.append(None)
            if problem:
                self.find("invalid", row, problem)
            if eps is None:
                continue
            self.opacus_checked += 1
            if not self.tolerance.opacus_agrees(row.epsilon, eps):
                self.find("opacus", row, f"recorded ε={row.epsilon:.6g} but the DDG accountant on the ledger's "
                                         f"parameters gives {eps:.6g}: the row was altered or under-reported")

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
            usable = usable and computable(row)
            if not usable:  # nonsense parameters (already reported): no ε can be derived from here on
                audit.opacus.append(None)
                audit.independent.append(None)
                continue
            history.append(run)
            if spends(*run):  # RDP is additive: Σ steps · (one step's curve); σ = 0 gives ∞
                spent = True
                dp_rdp = dp_rdp + row.steps * self.independent.rdp_curve(row.noise_multiplier, row.sample_rate)
            opacus = None
            if row.accountant == "rdp":
                opacus = opacus_epsilon(history, row.delta, "rdp")
                self._compare_opacus(row, opacus)
            independent = None
            if self.independent_name(row) == "rdp":
                independent = self.independent.rdp_epsilon(dp_rdp, row.delta) if spent else 0.0
                self._compare_independent(row, independent, "rdp")
            audit.opacus.append(opacus)
            audit.independent.append(independent)
            if row.accountant == "prv" or self.independent_name(row) == "pld":
                previous = max(audit.recorded[:-1], default=0.0)
                pending.append(_Pending(audit, index, row, merge_history(history), previous))
        return pending

    def _exact(self, pending: list[_Pending]) -> None:
        """PRV/PLD for at most ``max_exact`` distinct histories: each who's last row first."""
        last = {(item.audit.who, item.audit.unit): item for item in pending}
        finals = sorted(last.values(), key=lambda item: -finite_key(item.row.epsilon))
        others = sorted((item for item in pending if last[(item.audit.who, item.audit.unit)] is not item),
                        key=lambda item: -finite_key(item.row.epsilon))
        computed: set[tuple[accounting.Step, ...]] = set()
        for item in [*finals, *others]:
            if item.history not in computed:
                if self.max_exact is not None and len(computed) >= self.max_exact:
                    continue
                computed.add(item.history)
            row = item.row
            if row.accountant == "prv":
                opacus = opacus_epsilon(item.history, row.delta, "prv")
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
            rdp = opacus_epsilon(item.history, item.row.delta, "rdp")
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


def computable(row: LedgerRow) -> bool:
    """Parameters an accountant can take (not necessarily valid ledger values)."""
    return (row.noise_multiplier >= 0 and 0 <= row.sample_rate <= 1 and row.steps >= 0
            and 0 < row.delta < 1)

