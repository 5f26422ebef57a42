"""``fedrec train-central``: the central twin's run directory, same format as federated.

Writes ``metrics.jsonl`` (one row per epoch, ``round`` = epoch), ``summary.json`` (same
flat keys, including ItemPop), ``curves.png`` and ``model.pt``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from fedrec.core.baselines.popularity import evaluate_itempop
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import leave_one_out
from fedrec.core.run_files import (
    CURVES_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    append_jsonl,
    build_summary,
    read_jsonl,
    write_json_atomic,
)
from fedrec.core.training.central import CentralConfig, train_central
from fedrec.reporting.curves import plot_curves


def run_central(config: CentralConfig, out_dir: Path) -> dict[str, Any]:
    """Load ``config.dataset``, split it (leave-one-out with ``config.seed`` and
    ``config.eval_negatives``), train with :func:`train_central` and write the run directory;
    returns the summary."""
    if not config.dataset:
        raise ValueError("run_central needs CentralConfig.dataset: the data to load and split")
    out_dir = out_dir.expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / METRICS_FILE
    if metrics_path.exists():
        raise FileExistsError(f"{out_dir} already holds a run ({METRICS_FILE}); choose another --out")
    started = time.perf_counter()
    split = leave_one_out(load_dataset(config.dataset, config.data_dir, config.seed),
                          seed=config.seed, eval_negatives=config.eval_negatives)
    itempop = evaluate_itempop(split, config.k)

    def log_epoch(row: dict[str, float]) -> None:
        append_jsonl(metrics_path, {"round": row["epoch"], **row})

    model, _ = train_central(split, config, on_epoch=log_epoch)
    torch.save(model.state_dict(), out_dir / "model.pt")
    rows = read_jsonl(metrics_path)
    summary = build_summary(rows, config.k, itempop, {"mode": "central", **config.to_flat()},
                            time.perf_counter() - started)
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    plot_curves(rows, config.k, out_dir / CURVES_FILE, itempop, step_key="round",
                title=f"central {config.model} on {config.dataset}")
    return summary
