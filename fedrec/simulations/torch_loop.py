"""The same federated arithmetic as a Flower simulation, in one plain Python loop.

Each round samples ``clients-per-round`` users (:func:`fedrec.core.sampling.sample_users`,
as the server does for the cohort executor), trains them with the configured executor's
function — :func:`~fedrec.core.local_update.user_round` user after user (per-client) or
:func:`~fedrec.core.cohort.cohort_round` in one vectorised pass (cohort), the very
functions the ClientApp calls, with the same per-user seeds — averages the updates and
steps the server optimiser; evaluation calls the ClientApp's scoring path for every
user. No Flower, no Ray, no serialisation: its wall time is the floor that the
simulation's overhead is measured against.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from fedrec.core.aggregation import weighted_mean
from fedrec.core.executors import evaluate_users, train_users
from fedrec.core.data.split import LeaveOneOutSplit
from fedrec.core.device import resolve_device
from fedrec.core.evaluation import mean_metrics
from fedrec.core.models.base import global_state
from fedrec.core.models.registry import build_model
from fedrec.core.run_config import RunConfig
from fedrec.core.sampling import sample_users
from fedrec.server.loop import make_server_optimizer


def run_torch_loop(split: LeaveOneOutSplit, config: RunConfig, threads: int = 1,
                   evaluate: bool = True, partitions: int = 1) -> list[dict[str, Any]]:
    """Train like ``fedrec simulate`` would and return one row per round.

    ``evaluate=False`` skips the evaluation rounds (benchmarks timing training alone).
    With ``partitions = P`` the users are dealt to P partitions as to P nodes
    (``u mod P``) and the partitions' mean updates are averaged by their example counts,
    as the strategy averages the nodes' replies. (The floor that
    runs partitions in parallel processes is :mod:`fedrec.simulations.parallel_floor`.)
    """
    torch.set_num_threads(threads)
    device = resolve_device(config.device)
    model = build_model(config.model, 1, split.n_items, config.dim, seed=config.seed)
    arrays = {k: v.detach().numpy().copy() for k, v in global_state(model).items()}
    optimizer = make_server_optimizer(config, split.n_items)
    local: dict[int, dict[str, np.ndarray]] = {}
    rows = []
    for server_round in range(1, config.rounds + 1):
        started = time.perf_counter()
        users = [int(u) for u in sample_users(split.n_users, config.clients_per_round, config.seed,
                                              server_round, "train")]
        updates, weights, losses = [], [], []
        for part in range(partitions):
            mine = [u for u in users if u % partitions == part]
            result = train_users(config, arrays, [local.get(u) for u in mine],
                                 [split.user_data(u, for_evaluation=False) for u in mine], server_round,
                                 device=device)
            local.update(zip(result.users, result.locals))
            if result.weight > 0:
                updates.append(result.mean_update)
                weights.append(result.weight)
                losses.append(result.mean_loss)
        arrays = optimizer.step(arrays, weighted_mean(updates, weights))
        row: dict[str, Any] = {"round": server_round, "train_loss": float(np.average(losses, weights=weights)),
                               "clients": len(users), "train_seconds": time.perf_counter() - started}
        if evaluate and (server_round % config.eval_every == 0 or server_round == config.rounds):
            evaluated_users = [int(u) for u in split.evaluated_users()]
            stored = [local.get(u) for u in evaluated_users]
            data = [split.user_data(u) for u in evaluated_users]
            evaluated = evaluate_users(config, arrays, stored, data, device=device)
            row.update(mean_metrics(evaluated))
        row["wall_seconds"] = time.perf_counter() - started
        rows.append(row)
    return rows
