"""Run outputs shared by federated and central runs: ``metrics.jsonl``, ``summary.json``,
``curves.png``.

``metrics.jsonl`` has one JSON object per round (federated) or epoch (central), written
and flushed as the run goes. ``summary.json`` has flat top-level keys ``hr@10``,
``ndcg@10``, ``itempop_hr@10``, ``itempop_ndcg@10``, ``rounds``, ``wall_seconds`` plus the
full config, so runs can be compared by reading one file. ``curves.png`` (its name is
:data:`CURVES_FILE`) is drawn from ``metrics.jsonl``'s rows by
:func:`fedrec.reporting.curves.plot_curves`; this module has no plotting.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fedrec.core.evaluation.selection import selected_row

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
# the metrics of a rating model (explicit-mf), reported beside or instead of the ranking ones
RATING_METRICS = ("rmse", "mae")
CURVES_FILE = "curves.png"


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk, so a crash loses no finished round."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every JSON line of ``path`` (blank lines skipped); ``[]`` when the file is absent."""
    if not path.exists():
        return []
    with path.open("r", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented, key-sorted JSON via a temporary file and a rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def build_summary(
    rows: list[dict[str, Any]],
    k: int,
    itempop: dict[str, float] | None,
    config: dict[str, Any],
    wall_seconds: float,
    step_key: str = "round",
    model_selection: str = "last",
) -> dict[str, Any]:
    """Flat summary from the evaluated row ``model_selection`` picks (the last one, or the one with
    the best validation HR: :mod:`fedrec.core.evaluation.selection`)."""
    evaluated = [row for row in rows if f"hr@{k}" in row or RATING_METRICS[0] in row]
    if not evaluated:
        raise ValueError("the run has no evaluated round")
    last = selected_row(evaluated, model_selection, k)
    summary: dict[str, Any] = {
        key: value for key, value in last.items() if "@" in key or key in RATING_METRICS
    }
    if "users-evaluated" in last:  # federated runs: how many users the final numbers average
        summary["users_evaluated"] = int(last["users-evaluated"])
    summary.update({
        "rounds": int(rows[-1][step_key]) if rows else 0,
        "evaluated_at": int(last[step_key]),
        "model_selection": model_selection,
        "wall_seconds": wall_seconds,
        "config": config,
    })
    if itempop is not None:
        summary.update({f"itempop_{key}": value for key, value in itempop.items()})
    return summary
