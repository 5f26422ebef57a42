"""``audit.json``: an :class:`~fedrec.core.privacy.audit_result.AuditReport` as a JSON document.

Keys are those of :func:`report_dict`; ε lists are aligned with each who's ``seqs`` and
``rounds``. JSON has no infinity, so ∞ is written as the string ``"inf"`` (NaN as
``null``). The plot and the console table are drawn outside the core, by
:mod:`fedrec.reporting.audit_report`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fedrec.core.privacy.audit_result import AuditReport, finite_key
from fedrec.core.privacy.ledger_rows import SERVER
from fedrec.core.run_files import write_json_atomic

AUDIT_FILE = "audit.json"


def json_number(value: float | None) -> float | str | None:
    """JSON has no infinity: ∞ is written as the string "inf" (NaN as null)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def report_dict(report: AuditReport) -> dict[str, Any]:
    """``audit.json``'s content; ε lists are aligned with ``seqs`` and ``rounds``."""
    clients = [w for w in report.whos if w.who != SERVER]
    top = max(clients, key=lambda w: finite_key(w.max_epsilon), default=None)
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
        "signatures_ok": report.signatures_ok,
        "signed_heads": report.heads,
        "signature_key": report.key_source,
        "signature_problems": report.signature_problems,
        "device_signatures_checked": report.device_signatures_checked,
        "device_signature_problems": report.device_problems,
        "crosscheck_ok": report.crosscheck_ok,
        "crosscheck_problems": report.crosscheck_problems,
        "notes": report.notes,
        "independent_accountant": report.forced_accountant or "per row (rdp→rdp, prv→pld)",
        "max_exact": report.max_exact,
        "rows_opacus_checked": report.rows_opacus_checked,
        "rows_independent_checked": report.rows_independent_checked,
        "rows_bracketed": report.rows_bracketed,
        "seconds": round(report.seconds, 3),
        "tolerance": {
            "opacus_rel": report.tolerance.opacus_rel,
            "bands": {f"{a}->{b}": {"below": [[json_number(u), s] for u, s in band.below],
                                    "above": json_number(band.above), "below_abs": band.below_abs,
                                    "above_abs": band.above_abs}
                      for (a, b), band in report.tolerance.bands.items()},
        },
        "mismatches": [vars(f) for f in report.mismatches],
        "overshoots": [vars(f) for f in report.overshoots],
        "global": {
            "clients": len({w.who for w in clients}),
            "max_client_epsilon": json_number(top.max_epsilon if top else None),
            "max_client": top.who if top else None,
            "max_client_pld_epsilon": json_number(top.pld_epsilon if top else None),
            "server_epsilon": json_number(max((w.max_epsilon for w in server), default=None)),
            "server_pld_epsilon": json_number(max((w.pld_epsilon for w in server if w.pld_epsilon is not None),
                                                   default=None)),
            "client_max_epsilon_by_round": {str(r): json_number(v)
                                            for r, v in report.epsilon_by_round(server=False).items()},
            "server_epsilon_by_round": {str(r): json_number(v)
                                        for r, v in report.epsilon_by_round(server=True).items()},
        },
        "whos": [{
            "who": w.who, "unit": w.unit, "relation": w.relation, "mode": w.mode, "accountant": w.accountant,
            "delta": w.delta,
            "budget": w.budget, "max_epsilon": json_number(w.max_epsilon),
            "final_epsilon": json_number(w.final_epsilon), "pld_epsilon": json_number(w.pld_epsilon),
            "findings": w.findings,
            "seqs": w.seqs, "rounds": w.rounds,
            "recorded": [json_number(v) for v in w.recorded],
            "opacus": [json_number(v) for v in w.opacus],
            "independent": [json_number(v) for v in w.independent],
        } for w in report.whos],
    }


def write_audit_json(report: AuditReport, run_dir: Path) -> None:
    """Write ``run_dir/audit.json`` (atomically)."""
    write_json_atomic(Path(run_dir) / AUDIT_FILE, report_dict(report))
