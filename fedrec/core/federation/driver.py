"""One round driver for every model family, without Flower.

Per round: **sample** the users (``clients-per-round`` uniformly without replacement,
seeded by ``(seed, round)``, among the family's trainable users; under ``user-central``
DP each user by Poisson with rate ``q``) → each user's **local round** (the family's
:meth:`~fedrec.core.families.base.ModelFamily.train_users`; under a DP mode the client
mechanism of :mod:`fedrec.core.privacy.client_round`) → **aggregate**
(:func:`~fedrec.core.federation.server_step.combine`) → **server optimiser** → the
optional **privacy mechanism** of the server (:mod:`fedrec.core.federation.private_rounds`)
→ the **evaluation hook** every ``eval-every`` rounds and at the last (the family's
evaluation of every user with held-out data, pooled as the apps pool it).

It is the experimenter's loop: it holds every user's data and local parameters in one
process, so its evaluation is exact (``"evaluation": "exact (harness)"`` under DP). The
Flower apps run the same family calls and the same server step
(:mod:`fedrec.core.federation.server_step`), so for the same config and seeds the cohort
executor through Flower reproduces these rows. :func:`run_federation` returns the final
global arrays and local parameters publicly, for whoever scores with the trained model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from fedrec.core.arrays import Arrays
from fedrec.core.config.protocols import apply_protocol
from fedrec.core.config.run_config import RunConfig
from fedrec.core.evaluation.selection import BestRound
from fedrec.core.families.base import ModelFamily
from fedrec.core.families.registry import family_of
from fedrec.core.federation.sampling import sample_users
from fedrec.core.federation.server_step import combine, initial_global, reply_update, server_optimizer
from fedrec.core.training.device import resolve_device
from fedrec.core.training.implicit import needs_evaluation_negatives

RoundHook = Callable[[dict[str, Any]], None]


@dataclass
class FederationResult:
    """What a federated run produced: one row per round, the final global arrays, and every
    trained user's local parameters (``{user: arrays}``; empty for families without any)."""

    rows: list[dict[str, Any]]
    arrays: Arrays
    locals: dict[int, Arrays] = field(default_factory=dict)
    selected_round: int | None = None  # the round ``arrays``/``locals`` are from (model-selection)


def round_users(family: ModelFamily, split: Any, config: RunConfig, server_round: int) -> list[int]:
    """The users a round trains: ``clients-per-round`` of the family's trainable users."""
    eligible = family.trainable_users(split)
    if eligible is None:
        return [int(u) for u in sample_users(split.n_users, config.clients_per_round, config.seed, server_round,
                                             "train")]
    chosen = sample_users(len(eligible), config.clients_per_round, config.seed, server_round, "train")
    return [eligible[int(i)] for i in chosen]


def evaluate_all(family: ModelFamily, split: Any, config: RunConfig, arrays: Arrays, local: dict[int, Arrays],
                 device: str | torch.device = "cpu") -> dict[str, float]:
    """The family's metrics over every user with held-out data (pooled, then finished)."""
    users = family.evaluated_users(split)
    rows = family.evaluate_users(config, arrays, [local.get(u) for u in users],
                                 [family.user_data(split, u) for u in users], device=device)
    pooled, _ = family.pool(rows)
    return family.finish(pooled)


def run_federation(config: RunConfig, split: Any | None = None, *, threads: int = 1, evaluate: bool = True,
                   partitions: int = 1, on_round: RoundHook | None = None) -> FederationResult:
    """Train ``config.rounds`` rounds of ``config.model`` on ``split`` (default: the run's split).

    ``evaluate=False`` skips the evaluation rounds (for timing training alone). With
    ``partitions = P`` the users are dealt to P partitions as to P nodes (``u mod P``)
    and the partitions' replies are combined as the strategy combines nodes' replies.
    ``on_round`` sees each row as it is made. With ``model-selection best-validation`` the
    returned arrays and local parameters are those of the evaluated round with the best
    validation HR (:mod:`fedrec.core.evaluation.selection`); otherwise the last round's.
    """
    family = family_of(config.model)
    family.check(config)
    split = split if split is not None else family.load_split(config)
    config = apply_protocol(config, split.n_users)
    torch.set_num_threads(threads)
    device = resolve_device(config.device)
    arrays = initial_global(config, split)
    optimizer = server_optimizer(config, split.n_items)
    local: dict[int, Arrays] = {}
    rows: list[dict[str, Any]] = []
    private = None
    best = BestRound(config.evaluation.model_selection, config.eval_k)
    selected: tuple[Arrays, dict[int, Arrays]] | None = None
    if config.dp != "off":
        from fedrec.core.federation.private_rounds import PrivateRounds

        private = PrivateRounds(config, family, split.n_users)
        private.start(split)
    for server_round in range(1, config.rounds + 1):
        started = time.perf_counter()
        if private is not None:
            if not private.round_allowed():
                break
            arrays, row = private.round(split, arrays, local, optimizer, server_round)
        else:
            arrays, row = _plain_round(family, split, config, arrays, local, optimizer, server_round, partitions,
                                       device)
        row["train_seconds"] = time.perf_counter() - started
        if evaluate and (server_round % config.eval_every == 0 or server_round == config.rounds):
            row.update(evaluate_all(family, split, config, arrays, local, device))
            if private is not None:
                row["evaluation"] = "exact (harness)"
                row["epsilon_max"] = private.count_evaluation(split)
            if best.selection != "last" and best.improves(row):
                selected = ({k: v.copy() for k, v in arrays.items()},
                            {u: {k: v.copy() for k, v in a.items()} for u, a in local.items()})
        row["wall_seconds"] = time.perf_counter() - started
        rows.append(row)
        if on_round is not None:
            on_round(row)
    if selected is not None:
        return FederationResult(rows, selected[0], selected[1], best.round)
    return FederationResult(rows, arrays, local, rows[-1]["round"] if rows else None)


def _plain_round(family: ModelFamily, split: Any, config: RunConfig, arrays: Arrays, local: dict[int, Arrays],
                 optimizer: Any, server_round: int, partitions: int,
                 device: torch.device) -> tuple[Arrays, dict[str, Any]]:
    """A round without DP: train the sampled users partition by partition, combine, step."""
    users = round_users(family, split, config, server_round)
    updates, weights, losses = [], [], []
    for part in range(partitions):
        mine = [u for u in users if u % partitions == part]
        result = family.train_users(config, arrays, [local.get(u) for u in mine],
                                    [family.user_data(split, u, for_evaluation=needs_evaluation_negatives(config.train_negatives))
                                     for u in mine], server_round,
                                    device=device)
        local.update((u, v) for u, v in zip(result.users, result.locals) if v)
        if result.weight > 0:
            updates.append(reply_update(family, result.update_sum, result.weight))
            weights.append(result.weight)
            losses.append(result.mean_loss)
    if updates:
        arrays = optimizer.step(arrays, combine(family, updates, weights))
    loss = float(np.average(losses, weights=weights)) if updates else None
    return arrays, {"round": server_round, "train_loss": loss, "clients": len(users)}
