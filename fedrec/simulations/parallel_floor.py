"""The floor for P cohort nodes on P cores: the same arithmetic in P plain processes.

Flower's cohort executor runs ``cohort-nodes`` nodes in parallel (Ray actors). Its
floor is the same work spread the same way with nothing of Flower or Ray: P worker
processes (``multiprocessing``, spawn), worker ``p`` holding users ``u ≡ p (mod P)``
and their private vectors for the whole run, exactly as node ``p`` does. Each round the
parent samples users (:func:`fedrec.core.federation.sampling.sample_users`), sends every worker
the global arrays through a pipe, each worker runs
:func:`fedrec.core.training.cohort.cohort_round` on its sampled users with one torch thread and
sends back ``Σ n_b Δ_b`` and ``Σ n_b``; the parent averages and steps the server
optimiser. What is left is the arithmetic itself, with the same contention for cores
and memory bandwidth as the nodes have, plus two small pickles per worker and round.
"""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from fedrec.core.arrays import Arrays
from fedrec.core.config.run_config import RunConfig


def _worker(config: RunConfig, part: int, partitions: int, inbox: Connection) -> None:
    import torch

    from fedrec.client.partition import split_for
    from fedrec.core.data.split import NO_ITEM
    from fedrec.core.evaluation.protocols import mean_metrics
    from fedrec.core.training.cohort import cohort_round
    from fedrec.core.training.cohort_evaluation import cohort_metrics
    from fedrec.core.training.device import resolve_device
    from fedrec.core.training.implicit import needs_evaluation_negatives

    torch.set_num_threads(1)
    device = resolve_device(config.device)
    split = split_for(config)
    local: dict[int, Arrays] = {}
    inbox.send("ready")
    while True:
        command = inbox.recv()
        if command is None:
            return
        kind, server_round, arrays, users = command
        mine = [u for u in users if u % partitions == part]
        if kind == "train":
            result = cohort_round(config, arrays, [local.get(u) for u in mine],
                                  [split.user_data(u, for_evaluation=needs_evaluation_negatives(config.train_negatives))
                                   for u in mine], server_round,
                                  device=device)
            local.update(zip(result.users, result.locals))
            inbox.send((result.update_sum, result.weight, result.mean_loss))
        else:
            data = [split.user_data(u) for u in mine if split.test_item[u] != NO_ITEM]
            rows = cohort_metrics(config, arrays, [local.get(d.user) for d in data], data, device=device)
            inbox.send((mean_metrics(rows), len(rows)))


def run_parallel_floor(config: RunConfig, partitions: int, evaluate: bool = False) -> list[dict[str, Any]]:
    """Train ``config.rounds`` rounds with the cohort arithmetic in ``partitions`` processes."""
    from fedrec.client.partition import split_for
    from fedrec.core.federation.sampling import sample_users
    from fedrec.core.federation.server_step import server_optimizer
    from fedrec.server.loop import initial_global_arrays

    split = split_for(config)
    context = multiprocessing.get_context("spawn")
    pipes, workers = [], []
    for part in range(partitions):
        parent_end, child_end = context.Pipe()
        worker = context.Process(target=_worker, args=(config, part, partitions, child_end), daemon=True)
        worker.start()
        pipes.append(parent_end)
        workers.append(worker)
    try:
        for pipe in pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("a floor worker failed to start")
        arrays = initial_global_arrays(config, split.n_items)
        optimizer = server_optimizer(config, split.n_items)
        rows = []
        for server_round in range(1, config.rounds + 1):
            started = time.perf_counter()
            users = [int(u) for u in sample_users(split.n_users, config.clients_per_round, config.seed,
                                                  server_round, "train")]
            for pipe in pipes:
                pipe.send(("train", server_round, arrays, users))
            replies = [pipe.recv() for pipe in pipes]
            weight = sum(r[1] for r in replies)
            mean = {k: (sum(r[0][k] for r in replies) / weight).astype(np.float32) for k in arrays}
            arrays = optimizer.step(arrays, mean)
            loss = sum(r[2] * r[1] for r in replies) / weight
            row: dict[str, Any] = {"round": server_round, "clients": len(users), "train_loss": loss,
                                   "train_seconds": time.perf_counter() - started}
            if evaluate and (server_round % config.eval_every == 0 or server_round == config.rounds):
                everyone = list(range(split.n_users))
                for pipe in pipes:
                    pipe.send(("evaluate", server_round, arrays, everyone))
                parts = [pipe.recv() for pipe in pipes]
                total = sum(n for _, n in parts)
                keys = next((m for m, n in parts if n), {})
                row.update({k: sum(m[k] * n for m, n in parts if n) / total for k in keys})
            row["wall_seconds"] = time.perf_counter() - started
            rows.append(row)
        return rows
    finally:
        for pipe in pipes:
            try:
                pipe.send(None)
            except (BrokenPipeError, OSError):
                pass
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
