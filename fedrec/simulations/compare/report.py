"""The report of ``fedrec compare``: ``compare.json``, ``compare.md`` and ``compare.png``.

Input is what :func:`fedrec.simulations.compare.run.run_compare` produces — a ``meta`` dict, one row per
model × setting and the cold-start rows — as plain JSON-ready dicts, so the writer can be
tested on hand-made rows. A row::

    {"model": "mf", "family": "matrix factorisation", "setting": "federated",
     "status": "ok" | "not available" | "failed", "reason": "",
     "metrics": {"hr@10": …, "coverage@10": …, "rmse": …},
     "wall_seconds": 41.2, "train_seconds": 30.1, "bytes_sent": 4438425600,
     "details": "what ran, with its settings", "info": {"epsilon_spent": 8.0}}

``compare.md`` holds one table sorted by family (then model, then setting), the
cold-start tables, the notes of rows that did not run, and each row's settings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

# What the report is made of: names shared with the rest of fedrec.simulations.compare.
JSON_FILE, MARKDOWN_FILE, CHART_FILE = "compare.json", "compare.md", "compare.png"
STATUS_OK, STATUS_NOT_AVAILABLE, STATUS_FAILED = "ok", "not available", "failed"
CENTRAL, FEDERATED, FEDERATED_DP, CENTRAL_MMR = "central", "federated", "federated + DP", "central + MMR"
SETTINGS = (CENTRAL, CENTRAL_MMR, FEDERATED, FEDERATED_DP)
FAMILIES = ("popularity", "neighbourhood", "matrix factorisation", "neural", "feature-based", "sequence",
            "explicit rating")

Row = dict[str, Any]

# (column title, metric key with {k} for the cut-off, digits)
METRIC_COLUMNS = (
    ("HR@{k}", "hr@{k}", 3), ("NDCG@{k}", "ndcg@{k}", 3), ("full HR@{k}", "full_hr@{k}", 3),
    ("P@{k}", "precision@{k}", 4), ("R@{k}", "recall@{k}", 3), ("MRR@{k}", "mrr@{k}", 3),
    ("coverage", "coverage@{k}", 3), ("diversity", "diversity@{k}", 3), ("novelty", "novelty@{k}", 2),
    ("RMSE", "rmse", 3), ("MAE", "mae", 3),
)
COLD_USER_COLUMNS = (
    ("cold HR@{k}", "cold_users_hr@{k}", 3), ("cold NDCG@{k}", "cold_users_ndcg@{k}", 3),
    ("cold full HR@{k}", "cold_users_full_hr@{k}", 3), ("warm HR@{k}", "warm_users_hr@{k}", 3),
    ("warm full HR@{k}", "warm_users_full_hr@{k}", 3),
)
NEW_ITEM_COLUMNS = (
    ("AUC", "new_item_auc", 3), ("HR@{k}", "new_item_hr@{k}", 3), ("R@{k}", "new_item_recall@{k}", 3),
    ("random R@{k}", "new_item_random_recall@{k}", 3),
)


def write_report(meta: dict[str, Any], rows: Sequence[Row], cold_rows: Sequence[Row], out_dir: Path,
                 chart: bool = True) -> None:
    """Write ``compare.json``, ``compare.md`` and (with ``chart``) ``compare.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {"meta": meta, "rows": list(rows), "cold_start": {"settings": meta.get("cold_start", {}),
                                                                 "rows": list(cold_rows)}}
    (out_dir / JSON_FILE).write_text(json.dumps(document, indent=2, default=_json_default, allow_nan=True))
    (out_dir / MARKDOWN_FILE).write_text(markdown(meta, rows, cold_rows))
    if chart:
        write_chart(rows, out_dir / CHART_FILE, int(meta.get("k", 10)))


def sort_rows(rows: Sequence[Row]) -> list[Row]:
    """Rows by family (:data:`FAMILIES`), then model in first-seen order, then setting (:data:`SETTINGS`)."""
    first_seen: dict[str, int] = {}
    for row in rows:
        first_seen.setdefault(row["model"], len(first_seen))

    def key(row: Row) -> tuple[int, int, int]:
        family = FAMILIES.index(row["family"]) if row.get("family") in FAMILIES else len(FAMILIES)
        setting = SETTINGS.index(row["setting"]) if row["setting"] in SETTINGS else len(SETTINGS)
        return family, first_seen[row["model"]], setting

    return sorted(rows, key=key)


def markdown(meta: dict[str, Any], rows: Sequence[Row], cold_rows: Sequence[Row]) -> str:
    """The whole of ``compare.md``."""
    k = int(meta.get("k", 10))
    lines = [f"# fedrec compare — {meta.get('dataset', '?')}", ""]
    lines += _preamble(meta)
    lines += ["## All models", ""]
    lines += _table(sort_rows(rows), METRIC_COLUMNS, k, with_cost=True)
    lines += _notes(rows)
    if cold_rows:
        lines += ["## Cold start", ""]
        lines += _cold_preamble(meta.get("cold_start", {}), k)
        lines += ["### (a) Users with few training items", ""]
        lines += _table(sort_rows(cold_rows), COLD_USER_COLUMNS, k, with_cost=False)
        lines += ["### (b) New items (never in training)", ""]
        lines += _table(sort_rows(cold_rows), NEW_ITEM_COLUMNS, k, with_cost=False)
        lines += _notes(cold_rows)
    lines += ["## What each row ran", ""]
    for row in sort_rows(rows):
        ran = row.get("details") or f"{row['status']}: {row.get('reason', '')}"
        lines.append(f"- **{row['model']} · {row['setting']}**: {ran}{_info(row)}")
    if cold_rows:
        lines.append("- cold-start rows ran the same settings as the rows above, on the cold-start split.")
    lines.append("")
    return "\n".join(lines)


def _preamble(meta: dict[str, Any]) -> list[str]:
    lines = []
    for key, title in (("data", "Data"), ("split", "Split"), ("evaluation", "Evaluation"),
                       ("federated", "Federated rows"), ("bytes", "Bytes"), ("machine", "Machine")):
        if meta.get(key):
            lines.append(f"**{title}.** {meta[key]}")
            lines.append("")
    if "wall_seconds" in meta:
        lines += [f"Total wall time {meta['wall_seconds']:.0f} s"
                  f"{' (quick run)' if meta.get('quick') else ''}.", ""]
    return lines


def _cold_preamble(settings: dict[str, Any], k: int) -> list[str]:
    if not settings:
        return []
    return [
        f"A second split, made from the same leave-one-out split: {settings.get('description', '')}", "",
        f"(a) metrics over the {settings.get('cold_users', '?')} evaluated users with ≤ "
        f"{settings.get('max_train_items', '?')} training items (*cold*) and over the other "
        f"{settings.get('warm_users', '?')} (*warm*); a federated user's vector is reconstructed on the device "
        "from its own items with the global model frozen, as every federated evaluation does.", "",
        f"(b) each of the {settings.get('new_item_users', '?')} users who held one of the "
        f"{settings.get('new_items', '?')} new items ranks all new items by the model's score; AUC over "
        f"(held, not held) pairs (ties count ½), HR@{k}/R@{k} of the user's new items in the top {k} (tied "
        "scores in random order). "
        "A model without an item-feature path has no information about a new item (MF's item vector is its "
        "random start, moved only as a sampled negative), so it ranks them at about random (AUC 0.5).", "",
    ]


def _table(rows: Sequence[Row], columns: Sequence[tuple[str, str, int]], k: int, with_cost: bool) -> list[str]:
    header = ["model", "setting", *(title.format(k=k) for title, _, _ in columns)]
    if with_cost:
        header += ["seconds", "bytes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for row in rows:
        cells = [row["model"], row["setting"]]
        if row["status"] != STATUS_OK:
            cells += [row["status"]] + ["—"] * (len(columns) - 1)
        else:
            metrics = row.get("metrics", {})
            cells += [_number(metrics.get(key.format(k=k)), digits) for _, key, digits in columns]
        if with_cost:
            cells += [_number(row.get("wall_seconds"), 1), human_bytes(row.get("bytes_sent"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _notes(rows: Sequence[Row]) -> list[str]:
    missing = [row for row in rows if row["status"] != STATUS_OK]
    if not missing:
        return []
    lines = ["Rows that did not run:", ""]
    lines += [f"- {row['model']} · {row['setting']} — {row['status']}: {row.get('reason', '')}" for row in missing]
    return lines + [""]


def _info(row: Row) -> str:
    info = {key: value for key, value in (row.get("info") or {}).items() if key != "traceback"}  # JSON only
    if not info:
        return ""
    return " (" + ", ".join(f"{key} = {_plain(value)}" for key, value in info.items()) + ")"


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _number(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{float(value):.{digits}f}"


def human_bytes(value: Any) -> str:
    """``0`` → ``0``; otherwise decimal units: ``4.4 GB``, ``221 kB``."""
    if value is None:
        return "—"
    size = float(value)
    if size == 0:
        return "0"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" or size >= 100 else f"{size:.3g} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def write_chart(rows: Sequence[Row], path: Path, k: int) -> None:
    """Bars of HR@K, full HR@K and coverage@K per model, one bar per setting (ranking rows only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranking = [row for row in sort_rows(rows) if row["status"] == STATUS_OK
               and f"hr@{k}" in row.get("metrics", {})]
    models = list(dict.fromkeys(row["model"] for row in ranking))
    settings = [s for s in SETTINGS if any(row["setting"] == s for row in ranking)]
    panels = ((f"hr@{k}", f"HR@{k} (99 sampled negatives)"), (f"full_hr@{k}", f"HR@{k} (full ranking)"),
              (f"coverage@{k}", f"catalogue coverage@{k}"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8.0, 0.9 * len(models) + 3), 10), sharex=True)
    width = 0.8 / max(len(settings), 1)
    for ax, (key, title) in zip(axes, panels):
        for j, setting in enumerate(settings):
            values = {row["model"]: row["metrics"].get(key, math.nan) for row in ranking if row["setting"] == setting}
            xs = [i + (j - (len(settings) - 1) / 2) * width for i in range(len(models))]
            ax.bar(xs, [values.get(m, math.nan) for m in models], width=width, label=setting)
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncols=min(len(settings), 4) or 1, fontsize="small")
    axes[-1].set_xticks(range(len(models)), models, rotation=30, ha="right")
    fig.suptitle("fedrec compare: central vs federated")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _json_default(value: Any) -> Any:
    """numpy scalars and paths in the rows, as JSON values."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
