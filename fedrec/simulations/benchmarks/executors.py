"""Seconds per round and peak memory: per-client vs cohort executor vs the floor.

Every user trains in every round (``clients-per-round`` = number of users). For each
dataset, measured in this one run on this machine:

* **per-client** — ``fedrec simulate --executor per-client``: one Flower node per user
  (skipped above ``--per-client-max-users``, where a round takes many minutes);
* **cohort** — ``fedrec simulate --executor cohort``: ``--cohort-nodes`` Flower nodes,
  each training its users in one vectorised pass;
* **floor** — the same cohort arithmetic with no Flower or Ray: ``--cohort-nodes`` plain
  worker processes holding the same users as the nodes, fed through pipes
  (:mod:`fedrec.simulations.parallel_floor`); and, for scale, the **one-core** cost of
  the cohort arithmetic (:func:`fedrec.simulations.torch_loop.run_torch_loop`, executor
  ``cohort``, one process, one thread);
* **per-user loop** — the per-client arithmetic with no Flower (the same loop, executor
  ``per-client``): what a round costs when users are trained one after the other.

A round's time is ``train_seconds`` (sampling to aggregation; ``metrics.jsonl`` of the
Flower runs, the loop's own rows), the fastest of rounds 2…R (the mean is kept too) —
round 1 pays for starting Ray's workers, loading the data and warming up. Peak memory is the peak of the
summed PSS of the run's processes (:mod:`fedrec.simulations.process_memory`), or the
floor process's ``ru_maxrss``. Ratios: ``per-client / cohort`` (target ≥ 10 on
ML-100K) and ``cohort / floor`` (target ≤ 1.2). On ML-100K the final HR@10 of both
executors (all users evaluated after round R) is printed too: same seed, same
arithmetic, so it should agree within 0.01.

    python -m fedrec.simulations.benchmarks.executors --data-dir ../shared/data --out runs/executors
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.loaders import load_dataset
from fedrec.core.run_files import METRICS_FILE, read_jsonl
from fedrec.simulations.flower_runtime import RUNTIME_PARENT_ENV
from fedrec.simulations.process_memory import PeakMemory

GIB = 2**30


def _round_seconds(rows: list[dict[str, Any]]) -> float:
    """The fastest of rounds 2…R: the cost with the least interference from the machine.

    (These machines are shared and noisy; the mean is kept in ``mean_seconds_per_round``.)
    """
    later = [float(r["train_seconds"]) for r in rows if int(r["round"]) >= 2]
    return min(later) if later else float(rows[-1]["train_seconds"])


def _mean_train_seconds(rows: list[dict[str, Any]]) -> float:
    later = [float(r["train_seconds"]) for r in rows if int(r["round"]) >= 2]
    return statistics.mean(later) if later else float(rows[-1]["train_seconds"])


def _loop_in_child(config: RunConfig, threads: int, evaluate: bool) -> dict[str, Any]:
    """Run the torch loop in this (fresh) process; report its rows and peak RSS."""
    from fedrec.client.partition import split_for
    from fedrec.simulations.torch_loop import run_torch_loop

    started = time.perf_counter()
    rows = run_torch_loop(split_for(config), config, threads=threads, evaluate=evaluate)
    return {"rows": rows, "seconds": time.perf_counter() - started,
            "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def measure_loop(config: RunConfig, threads: int = 1, evaluate: bool = False) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply(_loop_in_child, (config, threads, evaluate))
    rows = result["rows"]
    return {"seconds_per_round": _round_seconds(rows), "mean_seconds_per_round": _mean_train_seconds(rows),
            "train_seconds": [r["train_seconds"] for r in rows],
            "peak_gib": result["peak_bytes"] / GIB, "hr@10": rows[-1].get("hr@10")}


def measure_parallel_floor(config: RunConfig, partitions: int, evaluate: bool) -> dict[str, Any]:
    from fedrec.simulations.parallel_floor import run_parallel_floor

    marker = f"FEDREC_FLOOR_RUN={os.getpid()}-{time.time_ns()}"
    key, value = marker.split("=")
    os.environ[key] = value  # the spawned workers inherit it; this process's /proc environ does not change
    try:
        with PeakMemory(marker) as peak:
            rows = run_parallel_floor(config, partitions, evaluate=evaluate)
    finally:
        os.environ.pop(key, None)
    return {"seconds_per_round": _round_seconds(rows), "mean_seconds_per_round": _mean_train_seconds(rows),
            "train_seconds": [r["train_seconds"] for r in rows], "peak_gib": peak.bytes / GIB,
            "hr@10": rows[-1].get("hr@10")}


def measure_flower(config: RunConfig, out_dir: Path, timeout_s: float) -> dict[str, Any]:
    """A ``fedrec simulate`` run in a runtime folder of its own, whose processes we can find."""
    from fedrec.simulations.simulate import simulate

    marker_dir = Path(tempfile.mkdtemp(prefix="frb-", dir="/tmp"))
    previous = os.environ.get(RUNTIME_PARENT_ENV)
    os.environ[RUNTIME_PARENT_ENV] = str(marker_dir)
    try:
        with PeakMemory(f"{RUNTIME_PARENT_ENV}={marker_dir}") as peak:
            summary = simulate(config, out_dir, show_progress=False, timeout_s=timeout_s)
    finally:
        if previous is None:
            os.environ.pop(RUNTIME_PARENT_ENV, None)
        else:
            os.environ[RUNTIME_PARENT_ENV] = previous
        shutil.rmtree(marker_dir, ignore_errors=True)
    rows = read_jsonl(out_dir / METRICS_FILE)
    return {"seconds_per_round": _round_seconds(rows), "mean_seconds_per_round": _mean_train_seconds(rows),
            "train_seconds": [r["train_seconds"] for r in rows],
            "node_seconds_max": [r.get("node_seconds_max") for r in rows], "peak_gib": peak.bytes / GIB,
            "hr@10": summary.get("hr@10"), "first_round_seconds": float(rows[0]["train_seconds"])}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def main(
    data_dir: str = typer.Option("", help="folder holding ml-100k; empty: skip ML-100K"),
    out: Path = typer.Option(..., help="folder for the runs and executors.json"),
    sizes: str = typer.Option("1k,10k,100k", help="synthetic datasets: users, comma-separated"),
    model: str = typer.Option("mf"),
    rounds: int = typer.Option(3, help="rounds per run; rounds 2… are timed"),
    cohort_nodes: int = typer.Option(2),
    per_client_max_users: int = typer.Option(1000, help="larger datasets skip the per-client runs"),
    per_user_loop_max_users: int = typer.Option(10_000, help="larger datasets skip the per-user loop"),
    timeout_s: float = typer.Option(3600.0, help="per Flower run"),
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    console = Console(width=240)
    datasets = ([("ml-100k", data_dir)] if data_dir else []) + [(f"synthetic-{s}", "") for s in sizes.split(",") if s]
    results = []
    for dataset, folder in datasets:
        n_users = load_dataset(dataset, folder, 0).n_users
        ml = dataset == "ml-100k"
        base = RunConfig(dataset=dataset, data_dir=folder, model=model, rounds=rounds, clients_per_round=n_users,
                         eval_every=rounds, eval_fraction=1.0 if ml else max(1e-4, 20 / n_users),
                         checkpoint_every=rounds, cohort_nodes=cohort_nodes)
        row: dict[str, Any] = {"dataset": dataset, "users": n_users, "model": model, "rounds": rounds}
        console.print(f"[bold]{dataset}[/]: {n_users} users, all of them every round")
        row["floor"] = measure_parallel_floor(replace(base, executor="cohort"), cohort_nodes, evaluate=ml)
        console.print(f"  floor ({cohort_nodes} plain processes, no Flower): {row['floor']}")
        row["one_core"] = measure_loop(replace(base, executor="cohort"))
        console.print(f"  cohort arithmetic on one core: {row['one_core']}")
        row["cohort"] = measure_flower(replace(base, executor="cohort"), out / f"{dataset}-cohort", timeout_s)
        console.print(f"  cohort executor: {row['cohort']}")
        if n_users <= per_user_loop_max_users:
            row["per_user_loop"] = measure_loop(replace(base, executor="per-client"), 1, evaluate=False)
            console.print(f"  per-user loop (no Flower): {row['per_user_loop']}")
        if n_users <= per_client_max_users:
            row["per_client"] = measure_flower(replace(base, executor="per-client"), out / f"{dataset}-per-client",
                                               timeout_s)
            console.print(f"  per-client executor: {row['per_client']}")
        row["per_client_over_cohort"] = _ratio(row.get("per_client", {}).get("seconds_per_round"),
                                               row["cohort"]["seconds_per_round"])
        row["cohort_over_floor"] = _ratio(row["cohort"]["seconds_per_round"], row["floor"]["seconds_per_round"])
        results.append(row)
        (out / "executors.json").write_text(json.dumps(results, indent=2))
    _print_table(console, results, cohort_nodes)


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def _print_table(console: Console, results: list[dict[str, Any]], nodes: int) -> None:
    table = Table(title=f"seconds per round (all users train), {os.cpu_count()} cores, {nodes} cohort nodes")
    for column in ("dataset", "users", "per-client s", "cohort s", "floor s", "one-core s", "per-user loop s",
                   "per-client/cohort", "cohort/floor", "cohort peak GiB", "per-client peak GiB",
                   "floor peak GiB", "HR@10 per-client", "HR@10 cohort"):
        table.add_column(column, justify="right")
    for r in results:
        per_client, cohort, floor = r.get("per_client", {}), r["cohort"], r["floor"]
        table.add_row(
            r["dataset"], str(r["users"]), _fmt(per_client.get("seconds_per_round")),
            _fmt(cohort["seconds_per_round"]), _fmt(floor["seconds_per_round"]),
            _fmt(r["one_core"]["seconds_per_round"]),
            _fmt(r.get("per_user_loop", {}).get("seconds_per_round")),
            _fmt(r["per_client_over_cohort"], ".1f"), _fmt(r["cohort_over_floor"], ".2f"),
            _fmt(cohort["peak_gib"]), _fmt(per_client.get("peak_gib")), _fmt(floor["peak_gib"]),
            _fmt(per_client.get("hr@10"), ".4f") if r["dataset"] == "ml-100k" else "—",
            _fmt(cohort.get("hr@10"), ".4f") if r["dataset"] == "ml-100k" else "—",
        )
    console.print(table)
    console.print("per-client/cohort: target ≥ 10 on ML-100K; cohort/floor: target ≤ 1.2")


if __name__ == "__main__":
    typer.run(main)
