"""``curves.png``: HR@K, NDCG@K and training loss of a run, by round (or epoch).

Drawn with matplotlib from the rows of ``metrics.jsonl``
(:mod:`fedrec.core.run_files`, which names the file :data:`~fedrec.core.run_files.CURVES_FILE`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable


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
