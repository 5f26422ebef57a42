"""Personalised federated recommenders on the papers' protocol, against FedMF and the central twins.

Every federated row runs the round driver (:func:`fedrec.core.federation.driver.run_federation`,
the cohort executor's arithmetic, as Flower's cohort simulation runs it) under ``protocol ncf-loo``
(:mod:`fedrec.core.config.protocols`: every user every round, 1 local epoch, d = 32, 4 negatives,
the round with the best validation HR@10 reported). Rows:

* ``fedmf`` — MF with the user vector local (FedMF/FedRecon style: what ``fedrec simulate`` ran before);
* ``mf+tune`` — the same, with post-tuning of the item table before scoring (``personal tune``);
* ``gmf+head`` — GMF with its output layer local (``personal head``);
* ``gmf+head+tune`` — both;
* ``central-mf``, ``central-neumf`` — the central twins, the epoch with the best validation HR@10.

Each row: HR@10 and NDCG@10 (mean ± std over seeds), the selected round, wall seconds, bytes a
client sends per round (its dense update of the global part, float32; it receives as many),
bytes a device stores per user (its local part). ``validation.png``: validation HR@10 by round.

    python -m fedrec.simulations.benchmarks.personalisation --data-dir DIR --out bench/personal
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

from fedrec.core.config.run_config import RunConfig
from fedrec.core.evaluation.selection import selected_row
from fedrec.core.families.implicit import run_split
from fedrec.core.federation.driver import run_federation
from fedrec.core.models.personal import local_bytes
from fedrec.core.models.run_model import build_run_model
from fedrec.core.training.central import CentralConfig, train_central
from fedrec.core.training.implicit import TrainingConfig

K = 10
# the client's optimiser and steps (the protocol leaves them to the run): SGD lr 2 with the
# server's step 20 on the mean update is what reached the README's federated MF numbers
CLIENT = dict(client_optimizer="sgd", lr=2.0, aggregation="fedavg-slr", server_lr=20.0, executor="cohort")
FEDERATED_ROWS: dict[str, dict[str, Any]] = {
    "fedmf": dict(model="mf", personal="none"),
    "mf+tune": dict(model="mf", personal="tune", tune_epochs=1),
    "gmf+head": dict(model="gmf", personal="head"),
    "gmf+head+tune": dict(model="gmf", personal="head+tune", tune_epochs=1),
}
CENTRAL_ROWS = {"central-mf": "mf", "central-neumf": "neumf"}


def federated_row(name: str, data_dir: str, seed: int, rounds: int | None,
                  train_negatives: str = "unseen-train", tune_epochs: int | None = None) -> dict[str, Any]:
    """One federated run of row ``name``: the selected round's metrics and the run's costs
    (``tune_epochs``: the post-tuning epochs of the rows that tune, default the row's)."""
    row = dict(FEDERATED_ROWS[name])
    if tune_epochs is not None and "tune_epochs" in row:
        row["tune_epochs"] = tune_epochs
    config = RunConfig(dataset="ml-100k", data_dir=data_dir, seed=seed, protocol="ncf-loo",
                       train_negatives=train_negatives, **CLIENT, **row)
    split = run_split(config)
    if rounds is not None:  # a shorter run than the protocol's 100 rounds (stated in the output)
        from dataclasses import replace

        from fedrec.core.config.protocols import apply_protocol

        config = replace(apply_protocol(config, split.n_users), protocol="none", rounds=rounds)
    started = time.perf_counter()
    result = run_federation(config, split, threads=2)
    wall = time.perf_counter() - started
    chosen = selected_row([r for r in result.rows if f"hr@{K}" in r], "best-validation", K)
    model = build_run_model(config, 1, split.n_items)
    global_floats = sum(int(np.prod(s)) for n, s in ((n, p.shape) for n, p in model.named_parameters())
                        if n in model.global_parameter_names)
    return {"row": name, "seed": seed, "hr@10": chosen[f"hr@{K}"], "ndcg@10": chosen[f"ndcg@{K}"],
            "val_hr@10": chosen[f"val_hr@{K}"], "round": chosen["round"], "rounds": len(result.rows),
            "tune_epochs": config.tune_epochs if "tune" in config.personal else 0,
            "train_seconds_per_round": float(np.mean([r["train_seconds"] for r in result.rows])),
            "round_seconds_per_round": float(np.mean([r["wall_seconds"] for r in result.rows])),
            "wall_seconds": wall, "bytes_per_client_round": 4 * global_floats, "device_bytes_per_user": local_bytes(model),
            "validation_curve": [r.get(f"val_hr@{K}") for r in result.rows]}


def central_row(name: str, data_dir: str, seed: int, epochs: int, train_negatives: str = "unseen-train",
                ) -> dict[str, Any]:
    """The central twin of row ``name``: the epoch with the best validation HR@10."""
    split = run_split(RunConfig(dataset="ml-100k", data_dir=data_dir, seed=seed))
    config = CentralConfig(dataset="ml-100k", data_dir=data_dir, model=CENTRAL_ROWS[name], dim=32, epochs=epochs,
                           seed=seed, eval_every=1, validation=True, train_negatives=train_negatives,
                           training=TrainingConfig(lr=0.001, batch_size=256, negatives=4))
    started = time.perf_counter()
    _, history = train_central(split, config)
    chosen = selected_row([r for r in history if f"hr@{K}" in r], "best-validation", K)
    return {"row": name, "seed": seed, "hr@10": chosen[f"hr@{K}"], "ndcg@10": chosen[f"ndcg@{K}"],
            "val_hr@10": chosen[f"val_hr@{K}"], "round": chosen["epoch"], "rounds": epochs,
            "wall_seconds": time.perf_counter() - started,
            "validation_curve": [r.get(f"val_hr@{K}") for r in history]}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds of each row's metrics and costs."""
    table = []
    for name in dict.fromkeys(r["row"] for r in runs):
        mine = [r for r in runs if r["row"] == name]
        line: dict[str, Any] = {"row": name, "seeds": len(mine)}
        for key in ("hr@10", "ndcg@10", "wall_seconds", "round", "train_seconds_per_round", "round_seconds_per_round"):
            if key not in mine[0]:  # the central twins have no rounds
                continue
            values = np.array([r[key] for r in mine], dtype=float)
            line[key] = float(values.mean())
            line[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        for key in ("bytes_per_client_round", "device_bytes_per_user"):
            if key in mine[0]:
                line[key] = mine[0][key]
        table.append(line)
    return table


def markdown(table: list[dict[str, Any]], rounds_note: str) -> str:
    lines = [f"ML-100K, protocol ncf-loo{rounds_note}; mean ± std over seeds", "",
             "| row | HR@10 | NDCG@10 | selected round | wall s | train s / round | round s (with evaluation) "
             "| bytes/client-round | device bytes/user |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        per_round = (f"{t['train_seconds_per_round']:.2f} | {t['round_seconds_per_round']:.2f}"
                     if "train_seconds_per_round" in t else "— | —")
        lines.append(f"| {t['row']} | {t['hr@10']:.4f} ± {t['hr@10_std']:.4f} | {t['ndcg@10']:.4f} ± "
                     f"{t['ndcg@10_std']:.4f} | {t['round']:.0f} | {t['wall_seconds']:.0f} | {per_round} | "
                     f"{t.get('bytes_per_client_round', '—')} | {t.get('device_bytes_per_user', '—')} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        if r["seed"] != runs[0]["seed"]:
            continue
        curve = [np.nan if v is None else v for v in r["validation_curve"]]
        ax.plot(range(1, len(curve) + 1), curve, label=r["row"])
    ax.set_xlabel("round (central: epoch)")
    ax.set_ylabel("validation HR@10")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(
    data_dir: str = typer.Option(..., help="folder holding ml-100k (u.data)"),
    out: Path = typer.Option(..., help="output folder: personalisation.json, .md, validation.png"),
    seeds: str = typer.Option("0,1,2", help="comma-separated seeds"),
    rows: str = typer.Option(",".join([*FEDERATED_ROWS, *CENTRAL_ROWS]), help="comma-separated rows"),
    rounds: int = typer.Option(0, help="federated rounds (0: the protocol's 100)"),
    central_epochs: int = typer.Option(30, help="central twins' epochs"),
    train_negatives: str = typer.Option("unseen-train", help="unseen-train; unseen-all: the literature's data "
                                        "loader, which never draws a user's held-out items as training negatives "
                                        "(and so leaks the test item to long local training); unseen-eval: never "
                                        "any evaluation candidate (no leak)"),
    tune_epochs: int = typer.Option(0, help="post-tuning epochs of the rows that tune (0: the row's own, 1)"),
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    unknown = [r for r in rows.split(",") if r not in FEDERATED_ROWS and r not in CENTRAL_ROWS]
    if unknown:
        raise typer.BadParameter(f"unknown rows {unknown}: choose from {[*FEDERATED_ROWS, *CENTRAL_ROWS]}")
    runs: list[dict[str, Any]] = []
    for name in rows.split(","):
        for seed in (int(s) for s in seeds.split(",")):
            run = (federated_row(name, data_dir, seed, rounds or None, train_negatives, tune_epochs or None)
                   if name in FEDERATED_ROWS
                   else central_row(name, data_dir, seed, central_epochs, train_negatives))
            run["train_negatives"] = train_negatives
            runs.append(run)
            print(f"{name} seed {seed}: HR@10 {run['hr@10']:.4f} NDCG@10 {run['ndcg@10']:.4f} "
                  f"(round {run['round']}, {run['wall_seconds']:.0f} s)", flush=True)
            (out / "personalisation.json").write_text(json.dumps({"runs": runs, "table": summarise(runs)}, indent=2))
    table = summarise(runs)
    note = ((f", {rounds} rounds" if rounds else "") + f", train-negatives {train_negatives}"
            + (f", tune-epochs {tune_epochs}" if tune_epochs else ""))
    (out / "personalisation.md").write_text(markdown(table, note))
    plot(runs, out / "validation.png")
    print(markdown(table, note))


if __name__ == "__main__":
    typer.run(main)
