"""Each model family through Flower and through the round driver, on the same settings.

For ``item-knn``, ``sasrec`` and ``explicit-mf`` (and ``mf`` as the reference family) the
benchmark runs ``fedrec simulate``'s Flower simulation with the cohort executor on two
nodes, and the round driver (:func:`fedrec.core.federation.driver.run_federation`) with
the users dealt to two partitions as to the two nodes, and prints both final metrics, their
difference and both wall times. The settings are the README's (``Model families``).

    python -m fedrec.simulations.benchmarks.families --dataset ml-100k --data-dir DIR --out families.json
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

from fedrec.core.config.run_config import RunConfig
from fedrec.core.federation.driver import run_federation
from fedrec.core.run_files import METRICS_FILE, read_jsonl
from fedrec.simulations.simulate import simulate

SETTINGS: dict[str, dict[str, Any]] = {
    "item-knn": dict(rounds=1, clients_per_round=100_000),
    "sasrec": dict(rounds=5, clients_per_round=100, client_optimizer="adam", lr=0.01, local_epochs=1, batch_size=8,
                   negatives=1, server_lr=10.0),
    "explicit-mf": dict(rounds=20, clients_per_round=100, dim=16, client_optimizer="adam", lr=0.02, batch_size=32,
                        weight_decay=0.05, local_epochs=2, user_epochs=1, server_lr=10.0),
    "mf": dict(rounds=20, clients_per_round=100, client_optimizer="sgd", lr=2.0, local_epochs=1),
}


def family_config(model: str, dataset: str, data_dir: str, n_users: int) -> RunConfig:
    """The benchmark's run config of ``model`` (all users sampled for item-kNN)."""
    settings = dict(SETTINGS[model])
    settings["clients_per_round"] = min(settings["clients_per_round"], n_users)
    rounds = settings["rounds"]
    return RunConfig(dataset=dataset, data_dir=data_dir, model=model, executor="cohort", cohort_nodes=2,
                     eval_every=rounds, checkpoint_every=rounds, **settings)


def metric_keys(model: str) -> tuple[str, ...]:
    return ("rmse", "mae") if model == "explicit-mf" else ("hr@10", "ndcg@10")


def main(
    dataset: str = typer.Option("synthetic"),
    data_dir: str = typer.Option(""),
    out: Path = typer.Option(..., help="results JSON"),
    models: str = typer.Option("item-knn,sasrec,explicit-mf,mf"),
) -> None:
    from fedrec.core.families.registry import family_of

    results: dict[str, Any] = {}
    for model in models.split(","):
        n_users = family_of(model).load_split(RunConfig(dataset=dataset, data_dir=data_dir, model="mf")).n_users
        config = family_config(model, dataset, data_dir, n_users)
        started = time.perf_counter()
        driver = run_federation(config, partitions=2).rows[-1]
        driver_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            simulate(config, Path(tmp) / "run", show_progress=False, timeout_s=3600)
            flower = read_jsonl(Path(tmp) / "run" / METRICS_FILE)[-1]
            flower_s = time.perf_counter() - started
        row = {key: {"driver": driver[key], "flower": flower[key], "difference": flower[key] - driver[key]}
               for key in metric_keys(model)}
        row.update(driver_seconds=driver_s, flower_seconds=flower_s, config=config.to_user_config())
        results[model] = row
        shown = "  ".join(f"{key} {v['flower']:.4f} (driver {v['driver']:.4f})" for key, v in row.items()
                          if isinstance(v, dict) and "flower" in v)
        print(f"{model:12s} {shown}  flower {flower_s:.0f} s, driver {driver_s:.0f} s", flush=True)
    out.write_text(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    typer.run(main)
