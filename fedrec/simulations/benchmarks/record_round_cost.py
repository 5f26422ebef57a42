"""What a record-level round of every ML-100K user costs, against the same round without DP.

    python -m fedrec.simulations.benchmarks.record_round_cost --data-dir DIR [--users 943] [--rounds 2]

One process, the round driver (:func:`fedrec.core.federation.driver.run_federation`, no
evaluation), ``--users`` users in every round, MF at the run defaults (SGD, the default
local and user epochs and batch size); for each row the median training seconds of its
``--rounds`` rounds (the first pays for imports and caches):

* **no DP** — the cohort executor's plain round;
* **record, cohort** — ``dp record`` vectorised over the cohort
  (:mod:`fedrec.core.privacy.record_cohort`; each user's DP-SGD steps, noise on every trained
  coordinate of its model at every step);
* **record, per client** — the same mechanism one user at a time (book-keeping clipping, Opacus' accountant);
* **record-distributed** — one DP gradient step over every record, secure-aggregation
  arithmetic emulated (:mod:`fedrec.core.privacy.record_distributed`; its own lr/clip do not
  change the cost).

Ratios are to the plain round of the same run (the machine is shared: compare within a run).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import typer

from fedrec.core.config.run_config import RunConfig


def round_seconds(config: RunConfig, threads: int) -> float:
    from fedrec.core.federation.driver import run_federation

    rows = run_federation(config, threads=threads, evaluate=False).rows
    return statistics.median(r["train_seconds"] for r in rows[1:] or rows)


def main(
    data_dir: str = typer.Option(..., help="folder holding ml-100k"),
    users: int = typer.Option(943, help="users in every round"),
    rounds: int = typer.Option(2, help="rounds per row (the median of all but the first)"),
    epsilon: float = typer.Option(8.0),
    threads: int = typer.Option(2, help="torch threads"),
    per_client: bool = typer.Option(True, help="also time the per-client path"),
) -> None:
    base = RunConfig(dataset="ml-100k", data_dir=data_dir, model="mf", rounds=rounds, clients_per_round=users,
                     eval_every=rounds, delta=1e-5, executor="cohort")
    private = replace(base, dp="record", epsilon=epsilon, rounds=rounds)
    rows = [("no DP (cohort)", base),
            ("record, cohort", private),
            ("record-distributed", replace(base, dp="record-distributed", epsilon=epsilon, clip=0.05, lr=1.0,
                                           ddg_bits=48))]
    if per_client:
        rows.insert(2, ("record, per client", replace(private, executor="per-client")))
    plain = None
    for label, config in rows:
        started = time.perf_counter()
        seconds = round_seconds(config, threads)
        plain = seconds if plain is None else plain
        print(f"{label:32s} {seconds:8.2f} s a round ({seconds / plain:5.2f}× no DP; "
              f"{time.perf_counter() - started:.0f} s for {rounds} rounds)", flush=True)


if __name__ == "__main__":
    typer.run(main)
