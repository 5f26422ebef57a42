"""Run outputs shared by federated and central runs: ``metrics.jsonl``, ``summary.json``,
``curves.png``.

``metrics.jsonl`` has one JSON object per round (federated) or epoch (central), written
and flushed as the run goes. ``summary.json`` has flat top-level keys ``hr@10``,
``ndcg@10``, ``itempop_hr@10``, ``itempop_ndcg@10``, ``rounds``, ``wall_seconds`` plus the
full config, so runs can be compared by reading one file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk, so a crash loses no finished round."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open("r", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
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
) -> dict[str, Any]:
    """Flat summary from the last evaluated row of a run."""
    evaluated = [row for row in rows if f"hr@{k}" in row]
    if not evaluated:
        raise ValueError("the run has no evaluated round")
    last = evaluated[-1]
    summary: dict[str, Any] = {
        key: value for key, value in last.items() if "@" in key
    }
    if "users-evaluated" in last:  # federated runs: how many users the final numbers average
        summary["users_evaluated"] = int(last["users-evaluated"])
    summary.update({
        "rounds": int(rows[-1][step_key]) if rows else 0,
        "evaluated_at": int(last[step_key]),
        "wall_seconds": wall_seconds,
        "config": config,
    })
    if itempop is not None:
        summary.update({f"itempop_{key}": value for key, value in itempop.items()})
    return summary


def plot_curves(
    rows: Iterable[dict[str, Any]],
    k: int,
    path: Path,
    itempop: dict[str, float] | None,
    step_key: str = "round",
    title: str = "",
) -> None:
    """HR@K, NDCG@K and training loss by round, with the ItemPop line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(rows)
    fig, (ax_rank, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    evaluated = [row for row in rows if f"hr@{k}" in row]
    for metric, colour in ((f"hr@{k}", "tab:blue"), (f"ndcg@{k}", "tab:orange")):
        ax_rank.plot([r[step_key] for r in evaluated], [r[metric] for r in evaluated],
                     marker="o", color=colour, label=metric)
        if itempop is not None and metric in itempop:
            ax_rank.axhline(itempop[metric], color=colour, linestyle="--", label=f"ItemPop {metric}")
    ax_rank.set_xlabel(step_key)
    ax_rank.set_ylabel("metric")
    ax_rank.legend()
    ax_rank.grid(alpha=0.3)
    losses = [r for r in rows if r.get("train_loss") is not None]
    ax_loss.plot([r[step_key] for r in losses], [r["train_loss"] for r in losses], color="tab:green")
    ax_loss.set_xlabel(step_key)
    ax_loss.set_ylabel("training loss")
    ax_loss.grid(alpha=0.3)
    last = max((r[step_key] for r in rows), default=1)
    for axis in (ax_rank, ax_loss):
        axis.set_xlim(0, last + 0.5)
        axis.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
