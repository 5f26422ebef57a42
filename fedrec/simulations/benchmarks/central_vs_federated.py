"""Central twin vs federated on ML-100K, with the same budget of local epochs.

For each model: the federated run (Flower simulation, ``rounds`` × ``clients-per-round``
users, ``local-epochs`` each) gives every user ``rounds·clients/n_users·local_epochs``
epochs of local training on average; the central twin trains that many epochs
(rounded, at least 1) on the same split with the same evaluation code. Printed: HR@10
and NDCG@10 of both and their ratio, wall times, and the simulation's overhead as the
ratio of its wall time to a pure-torch loop doing the same per-client work
(:mod:`fedrec.simulations.torch_loop`), all measured in this one run. The same loop
with plain FedAvg (server learning rate 1) shows what the server learning rate buys.

    python -m fedrec.simulations.benchmarks.central_vs_federated --data-dir DIR --out runs/bench
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import leave_one_out
from fedrec.core.training.central import CentralConfig
from fedrec.simulations.central_twin import run_central
from fedrec.simulations.simulate import simulate
from fedrec.simulations.torch_loop import run_torch_loop

K = 10


def central_epochs(config: RunConfig, n_users: int) -> int:
    """Epochs of central training with the federated run's budget of local epochs."""
    return max(1, round(config.rounds * config.clients_per_round / n_users * config.local_epochs))


def main(
    data_dir: str = typer.Option(..., help="folder holding ml-100k"),
    out: Path = typer.Option(..., help="folder for the runs and results.json"),
    models: str = typer.Option("mf,neumf"),
    rounds: int = typer.Option(100),
    clients_per_round: int = typer.Option(100),
    local_epochs: int = typer.Option(2),
    client_optimizer: str = typer.Option("sgd"),
    lr: float = typer.Option(2.0, help="client learning rate"),
    server_lr: float = typer.Option(20.0),
    eval_every: int = typer.Option(25),
    skip_flower: bool = typer.Option(False, help="only the central twin and the torch loop"),
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    split = leave_one_out(load_dataset("ml-100k", data_dir, 0))
    results = []
    for model in models.split(","):
        config = RunConfig(dataset="ml-100k", data_dir=data_dir, model=model, rounds=rounds,
                           clients_per_round=clients_per_round, local_epochs=local_epochs,
                           client_optimizer=client_optimizer, lr=lr, server_lr=server_lr,
                           eval_every=eval_every)
        epochs = central_epochs(config, split.n_users)
        t0 = time.perf_counter()
        central = run_central(CentralConfig(dataset="ml-100k", data_dir=data_dir, model=model,
                                            epochs=epochs, dim=config.dim, eval_every=max(1, epochs // 4)),
                              out / f"central-{model}")
        central_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            loop_rows = run_torch_loop(split, config)
            loop_s = time.perf_counter() - t0
            plain = run_torch_loop(split, replace(config, aggregation="fedavg", server_lr=1.0))
        except ValueError as err:  # e.g. a diverged model whose scores are NaN
            results.append({"model": model, "error": f"federated training failed: {err}",
                            "central_hr@10": central["hr@10"], "central_ndcg@10": central["ndcg@10"]})
            (out / "results.json").write_text(json.dumps(results, indent=2))
            continue
        row = {"model": model, "plain_fedavg_hr@10": plain[-1]["hr@10"], "central_epochs": epochs,
               "central_hr@10": central["hr@10"],
               "central_ndcg@10": central["ndcg@10"], "central_seconds": central_s,
               "itempop_hr@10": central["itempop_hr@10"],
               "loop_hr@10": loop_rows[-1]["hr@10"], "loop_ndcg@10": loop_rows[-1]["ndcg@10"],
               "loop_seconds": loop_s}
        if not skip_flower:
            t0 = time.perf_counter()
            federated = simulate(config, out / f"federated-{model}", show_progress=True)
            flower_s = time.perf_counter() - t0
            row.update({"federated_hr@10": federated["hr@10"], "federated_ndcg@10": federated["ndcg@10"],
                        "federated_seconds": flower_s, "overhead_ratio": flower_s / loop_s})
        fed_hr = row.get("federated_hr@10", row["loop_hr@10"])
        fed_ndcg = row.get("federated_ndcg@10", row["loop_ndcg@10"])
        row["hr_ratio"] = fed_hr / row["central_hr@10"]
        row["ndcg_ratio"] = fed_ndcg / row["central_ndcg@10"]
        results.append(row)
        (out / "results.json").write_text(json.dumps(results, indent=2))
    _print(results)


def _print(results: list[dict]) -> None:
    table = Table(title="ML-100K: central twin vs federated (same budget of local epochs)")
    for column in ("model", "plain FedAvg HR@10", "central HR@10", "fed HR@10", "HR ratio", "central NDCG@10", "fed NDCG@10",
                   "NDCG ratio", "central s", "flower s", "torch loop s", "overhead ×"):
        table.add_column(column, justify="right")
    for r in results:
        if "error" in r:
            Console().print(f"[red]{r['model']}: {r['error']}")
            continue
        fed_hr = r.get("federated_hr@10", r["loop_hr@10"])
        fed_ndcg = r.get("federated_ndcg@10", r["loop_ndcg@10"])
        table.add_row(
            r["model"], f"{r['plain_fedavg_hr@10']:.4f}", f"{r['central_hr@10']:.4f}", f"{fed_hr:.4f}", f"{r['hr_ratio']:.3f}",
            f"{r['central_ndcg@10']:.4f}", f"{fed_ndcg:.4f}", f"{r['ndcg_ratio']:.3f}",
            f"{r['central_seconds']:.0f}", f"{r.get('federated_seconds', float('nan')):.0f}",
            f"{r['loop_seconds']:.0f}", f"{r.get('overhead_ratio', float('nan')):.1f}",
        )
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
