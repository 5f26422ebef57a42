"""The same federated arithmetic as a Flower simulation, in one plain Python loop.

Each round samples ``clients-per-round`` users (:func:`fedrec.core.federation.sampling.sample_users`,
as the server does for the cohort executor), trains them with the configured executor's
function — :func:`~fedrec.core.training.local_round.user_round` user after user (per-client) or
:func:`~fedrec.core.training.cohort.cohort_round` in one vectorised pass (cohort), the very
functions the ClientApp calls, with the same per-user seeds — averages the updates and
steps the server optimiser; evaluation calls the ClientApp's scoring path for every
user. No Flower, no Ray, no serialisation: its wall time is the floor that the
simulation's overhead is measured against.

Under a DP mode it runs the same private arithmetic as the apps
(:func:`fedrec.core.privacy.client_round.private_train_users` on the clients,
:mod:`fedrec.core.privacy.aggregation` on the server, Poisson sampling of users under
``user-central``) and reports each round's largest ε (``epsilon_max``: the server's for
``user-central``, the largest client's otherwise) and the refusals; it writes no ledger.
Its evaluation is the *experimenter's* measurement: exact metrics computed in this
process, which holds every user's data anyway (``"evaluation": "exact (harness)"`` in the
row) — not what a federation would release. The accountants still count one evaluation
release ``(σ_e, 1, 1)`` per evaluated user (client modes) or per evaluation round
(``user-central``), so ``epsilon_max`` is the ε the apps would print for the same run.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from fedrec.core.federation.aggregation import weighted_mean
from fedrec.core.training.executors import evaluate_users, train_users
from fedrec.core.data.split import LeaveOneOutSplit
from fedrec.core.training.device import resolve_device
from fedrec.core.evaluation.protocols import mean_metrics
from fedrec.core.models.base import global_state
from fedrec.core.config.run_config import RunConfig
from fedrec.core.models.run_model import build_run_model
from fedrec.core.privacy import plan
from fedrec.core.privacy.accounting import Step, epsilon
from fedrec.core.privacy.adaptive_clip import AdaptiveClip
from fedrec.core.privacy.aggregation import central_noised_mean
from fedrec.core.privacy.client_round import budgeted, private_train_users
from fedrec.core.privacy.mechanisms import poisson_sample, secure_generator
from fedrec.core.federation.sampling import sample_users
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
    model = build_run_model(config, 1, split.n_items, seed=config.seed)
    arrays = {k: v.detach().numpy().copy() for k, v in global_state(model).items()}
    optimizer = make_server_optimizer(config, split.n_items)
    local: dict[int, dict[str, np.ndarray]] = {}
    rows = []
    private = _PrivateLoop(config, split.n_users) if config.dp != "off" else None
    for server_round in range(1, config.rounds + 1):
        started = time.perf_counter()
        if private is not None:
            if not private.round_allowed():
                break
            arrays, row = private.round(split, arrays, local, optimizer, server_round)
            row["train_seconds"] = time.perf_counter() - started
            row = _evaluated(row, split, config, arrays, local, evaluate, server_round, device, started)
            if "hr@" + str(config.eval_k) in row:
                row["evaluation"] = "exact (harness)"
                row["epsilon_max"] = private.count_evaluation(split)
            rows.append(row)
            continue
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
        rows.append(_evaluated(row, split, config, arrays, local, evaluate, server_round, device, started))
    return rows


def _evaluated(row: dict[str, Any], split: LeaveOneOutSplit, config: RunConfig, arrays: dict[str, np.ndarray],
               local: dict[int, dict[str, np.ndarray]], evaluate: bool, server_round: int,
               device: torch.device, started: float) -> dict[str, Any]:
    """``row`` with the ranking metrics on evaluation rounds, and its wall time."""
    if evaluate and (server_round % config.eval_every == 0 or server_round == config.rounds):
        evaluated_users = [int(u) for u in split.evaluated_users()]
        stored = [local.get(u) for u in evaluated_users]
        data = [split.user_data(u) for u in evaluated_users]
        row.update(mean_metrics(evaluate_users(config, arrays, stored, data, device=device)))
    row["wall_seconds"] = time.perf_counter() - started
    return row


class _PrivateLoop:
    """The DP round of the apps, in process: client mechanisms, accountants, server noise."""

    def __init__(self, config: RunConfig, n_users: int) -> None:
        self.config = config
        self.n_users = n_users
        self.histories: dict[int, list[Step]] = {}
        self.server_history: list[Step] = []
        self.adaptive = None
        if config.dp == "user-central" and config.adaptive_clip:
            self.adaptive = AdaptiveClip.for_round_size(config.clip, config.clip_quantile,
                                                        plan.central_rate(config, n_users) * n_users)

    def count_evaluation(self, split: LeaveOneOutSplit) -> float:
        """Add one evaluation release to every evaluated user's (or the server's) history,
        under the apps' budget rule (:func:`~fedrec.core.privacy.client_round.budgeted`: a
        release that would exceed the budget is refused); the largest ε after it."""
        step = plan.evaluation_step(self.config, self.n_users)
        if self.config.dp == "user-central":
            _, after = budgeted(self.config, 0, self.server_history, step)
            self.server_history = after if after is not None else self.server_history
            return epsilon(self.server_history, self.config.delta, self.config.accountant)
        spent = 0.0
        for user in (int(u) for u in split.evaluated_users()):
            release, after = budgeted(self.config, user, self.histories.get(user, []), step)
            if after is not None:
                self.histories[user] = after
            spent = max(spent, release.epsilon)
        return spent

    def round_allowed(self) -> bool:
        if self.config.dp != "user-central" or plan.budget(self.config) is None:
            return True
        step = (plan.central_noise(self.config, self.n_users), plan.central_rate(self.config, self.n_users), 1)
        spent = epsilon([*self.server_history, step], self.config.delta, self.config.accountant)
        return spent <= self.config.epsilon * (1 + 1e-9)

    def round(self, split: LeaveOneOutSplit, arrays: dict[str, np.ndarray], local: dict[int, dict[str, np.ndarray]],
              optimizer: Any, server_round: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        config = self.config
        if config.dp == "user-central":
            users = poisson_sample(list(range(self.n_users)), plan.central_rate(config, self.n_users))
        else:
            users = [int(u) for u in sample_users(self.n_users, config.clients_per_round, config.seed,
                                                  server_round, "train")]
        if self.adaptive is not None:
            config = replace(config, clip=self.adaptive.clip)
        result, releases, histories, within_clip = private_train_users(
            config, arrays, [local.get(u) for u in users], [split.user_data(u, for_evaluation=False) for u in users],
            server_round, [self.histories.get(u, []) for u in users])
        local.update(zip(result.users, result.locals))
        if config.dp != "user-central":
            self.histories.update((u, h) for u, h in zip(users, histories) if h)
        sums = [result.update_sum] if result.weight > 0 else []
        if config.dp == "user-central":
            sigma, rate = plan.central_noise(config, self.n_users), plan.central_rate(config, self.n_users)
            update_sigma = self.adaptive.update_noise_multiplier(sigma) if self.adaptive is not None else sigma
            mean = central_noised_mean(sums, [1.0] * len(sums), arrays, update_sigma, config.clip,
                                       rate * self.n_users, secure_generator())
            if self.adaptive is not None:
                self.adaptive.step(within_clip - result.weight / 2, rate * self.n_users, secure_generator())
            self.server_history.append((sigma, rate, 1))
            eps = epsilon(self.server_history, config.delta, config.accountant)
        else:
            mean = ({k: (v / result.weight).astype(np.float32) for k, v in result.update_sum.items()}
                    if result.weight > 0 else None)
            eps = max((r.epsilon for r in releases), default=0.0)
        if mean is not None:
            arrays = optimizer.step(arrays, mean)
        refused = sum(r.refused for r in releases)
        return arrays, {"round": server_round, "clients": len(result.users), "dp_refused": refused,
                        "epsilon_max": eps, "train_loss": None, "clip": config.clip}
