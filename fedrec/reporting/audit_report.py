"""Drawing and printing of ``fedrec audit``'s report: ``epsilon.png`` and the console table.

The checks are in :mod:`fedrec.core.privacy.audit`, the report's data in
:mod:`fedrec.core.privacy.audit_result` and ``audit.json`` in
:mod:`fedrec.core.privacy.audit_json`; this module only renders an
:class:`~fedrec.core.privacy.audit_result.AuditReport` (matplotlib, rich).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fedrec.core.privacy.audit_json import AUDIT_FILE, write_audit_json
from fedrec.core.privacy.audit_result import AuditReport, finite_key
from fedrec.core.privacy.ledger_rows import SERVER

PLOT_FILE = "epsilon.png"


def write_audit(report: AuditReport, run_dir: Path) -> None:
    """Write ``run_dir/audit.json`` and ``run_dir/epsilon.png``."""
    run_dir = Path(run_dir)
    write_audit_json(report, run_dir)
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

    def pld(who: Any) -> str:
        return "" if who.pld_epsilon is None else f" · PLD ε {number(who.pld_epsilon)} (tighter)"

    clients = [w for w in report.whos if w.who != SERVER]
    servers = [w for w in report.whos if w.who == SERVER]
    table = Table(title=escape(f"privacy audit of {report.run_dir}"), show_header=False)
    table.add_row("ledger rows", str(report.rows))
    table.add_row("hash chain", mark(report.chain_ok) + (f" ({len(report.chain_problems)} problems)"
                                                        if report.chain_problems else ""))
    table.add_row("anchors", mark(report.anchors_ok) + f" ({report.anchors} checked)")
    source = {"trusted": "trusted key", "run": "run's own key", "embedded": "key stored with the heads",
              None: "no key"}[report.key_source]
    table.add_row("signed heads", mark(not report.signature_problems) + f" ({report.heads}, {source})")
    if report.device_signatures_checked or report.device_problems:
        table.add_row("device signatures", mark(not report.device_problems)
                      + f" ({report.device_signatures_checked} checked)")
    table.add_row("plan / config / summary", mark(report.crosscheck_ok)
                  + (f" ({len(report.crosscheck_problems)} problems)" if report.crosscheck_problems else ""))
    if report.whos:
        table.add_row("unit · relation · δ · accountant", escape(", ".join(sorted(
            {f"{w.unit} · {w.relation} · {w.delta:g} · {w.accountant}" for w in report.whos}))))
    table.add_row("ε recomputed", f"Opacus {report.rows_opacus_checked}/{report.rows} rows, dp_accounting "
                                  f"{report.rows_independent_checked}/{report.rows}, bracketed "
                                  f"{report.rows_bracketed}")
    table.add_row("mismatches", mark(not report.mismatches) + f" ({len(report.mismatches)})")
    table.add_row("budget overshoots", mark(not report.overshoots) + f" ({len(report.overshoots)})")
    if clients:
        top = max(clients, key=lambda w: finite_key(w.max_epsilon))
        table.add_row("max client ε", f"{number(top.max_epsilon)} ({escape(top.who)}; "
                                      f"{len({w.who for w in clients})} clients)" + pld(top))
    if servers:
        server = max(servers, key=lambda w: finite_key(w.max_epsilon))
        table.add_row("server ε", number(server.max_epsilon) + pld(server))
    table.add_row("verdict", mark(report.ok))
    console.print(table)
    lines = [*report.chain_problems, *report.anchor_problems, *report.signature_problems,
             *report.device_problems, *report.crosscheck_problems]
    for line in lines[:10]:
        console.print(f"[red]•[/red] {escape(line)}")
    if len(lines) > 10:
        console.print(f"… and {len(lines) - 10} more in {AUDIT_FILE}")
    findings = [*report.mismatches, *report.overshoots]
    for finding in findings[:5]:
        console.print(f"[red]•[/red] {finding.kind}: {escape(finding.message)} "
                      f"(row {finding.seq}, round {finding.round}, {escape(finding.who)})")
    if len(findings) > 5:
        console.print(f"… and {len(findings) - 5} more in {AUDIT_FILE}")
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
