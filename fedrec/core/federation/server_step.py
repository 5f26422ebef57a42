"""The server's side of a round, shared by the round driver and the Flower ServerApp.

* :func:`initial_global` — round 0's global arrays (the family's, seeded by ``seed``);
* :func:`server_optimizer` — the configured :class:`ServerOptimizer`, its server learning
  rate applied to the family's item tables;
* :func:`combine` — the replies' aggregate fed to the optimiser: the example-weighted
  mean ``Δ̄ = Σ_k w_k Δ_k / Σ_k w_k`` of :func:`~fedrec.core.federation.aggregation.weighted_mean`,
  or, for a family that releases sums (item-kNN), the plain sum ``Σ_k Δ_k`` of replies that
  are already sums.

The driver and the strategy call these three and nothing else, so their arithmetic cannot drift.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedrec.core.arrays import Arrays
from fedrec.core.config.run_config import RunConfig
from fedrec.core.families.base import ModelFamily
from fedrec.core.families.registry import family_of
from fedrec.core.federation.aggregation import ServerOptimizer, weighted_mean


def initial_global(config: RunConfig, split: Any) -> Arrays:
    """The global arrays of round 0 for ``config.model`` on ``split``."""
    return family_of(config.model).initial_global(config, split)


def server_optimizer(config: RunConfig, n_items: int) -> ServerOptimizer:
    """The configured server optimiser; its server LR scales the family's item tables."""
    tables = family_of(config.model).item_tables(config, n_items)
    return ServerOptimizer(config.aggregation, config.server_lr, scaled=tables)


def combine(family: ModelFamily, updates: list[Arrays], weights: list[float]) -> Arrays:
    """What the optimiser steps with: the weighted mean of ``updates`` or, when the family
    releases sums, their sum (each update then already a sum of its users' shares)."""
    return combine_replies(updates, weights, family.releases_sum)


def combine_replies(updates: list[Arrays], weights: list[float], releases_sum: bool) -> Arrays:
    """``Σ_k w_k Δ_k / Σ_k w_k``, or ``Σ_k Δ_k`` when the replies are sums (``releases_sum``)."""
    if not releases_sum:
        return weighted_mean(updates, weights)
    if not updates:
        raise ValueError("no updates to add")
    total = {name: np.zeros(value.shape, dtype=np.float64) for name, value in updates[0].items()}
    for update in updates:
        if set(update) != set(total):
            raise ValueError("the updates do not agree in their keys")
        for name in total:
            total[name] += update[name]
    return {name: value.astype(np.float32) for name, value in total.items()}


def reply_update(family: ModelFamily, update_sum: Arrays, weight: float) -> Arrays:
    """What a node replies with for its users' ``Σ_b w_b Δ_b`` and ``Σ_b w_b``: their mean,
    or the sum itself for a family that releases sums (:func:`combine` adds those)."""
    if family.releases_sum:
        return {name: np.asarray(value, dtype=np.float32) for name, value in update_sum.items()}
    return {name: (value / weight).astype(np.float32) for name, value in update_sum.items()}
