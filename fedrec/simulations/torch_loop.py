"""The same federated arithmetic as a Flower simulation, in one plain Python loop.

Each round samples ``clients-per-round`` users, runs :func:`~fedrec.core.local_update.user_round`
for each (the very function the ClientApp calls, with the same per-user seeds), averages
the updates and steps the server optimiser; evaluation calls the ClientApp's scoring
path for every user. No Flower, no Ray, no serialisation: its wall time is the floor
that the simulation's overhead is measured against.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from fedrec.core.aggregation import weighted_mean
from fedrec.core.data.split import LeaveOneOutSplit
from fedrec.core.evaluation import mean_metrics
from fedrec.core.local_update import user_metrics, user_round
from fedrec.core.models.base import global_state
from fedrec.core.models.registry import build_model
from fedrec.core.run_config import RunConfig
from fedrec.server.loop import make_server_optimizer


def run_torch_loop(split: LeaveOneOutSplit, config: RunConfig) -> list[dict[str, Any]]:
    """Train like ``fedrec simulate`` would and return one row per round."""
    torch.set_num_threads(1)
    model = build_model(config.model, 1, split.n_items, config.dim, seed=config.seed)
    arrays = {k: v.detach().numpy().copy() for k, v in global_state(model).items()}
    optimizer = make_server_optimizer(config, split.n_items)
    local: dict[int, dict[str, np.ndarray]] = {}
    sampler = np.random.default_rng([config.seed, 5])
    rows = []
    for server_round in range(1, config.rounds + 1):
        started = time.perf_counter()
        users = sampler.choice(split.n_users, size=min(config.clients_per_round, split.n_users), replace=False)
        updates, weights, losses = [], [], []
        for user in map(int, users):
            data = split.user_data(user)
            if len(data.train_items) == 0:
                continue
            result = user_round(config, arrays, local.get(user), data, server_round)
            local[user] = result.local
            updates.append(result.update)
            weights.append(result.num_examples)
            losses.append(result.loss)
        arrays = optimizer.step(arrays, weighted_mean(updates, weights))
        row: dict[str, Any] = {"round": server_round, "train_loss": float(np.average(losses, weights=weights))}
        if server_round % config.eval_every == 0 or server_round == config.rounds:
            evaluated = [user_metrics(config, arrays, local.get(user), split.user_data(user))
                         for user in map(int, split.evaluated_users())]
            row.update(mean_metrics(evaluated))
        row["wall_seconds"] = time.perf_counter() - started
        rows.append(row)
    return rows
