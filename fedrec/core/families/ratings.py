"""Explicit ratings (``explicit-mf``) as a family: predict stars, report RMSE and MAE.

A user holds its ratings split by :func:`fedrec.core.training.ratings.holdout_ratings`
(a seeded ``rating-test-fraction`` of them held out) and a private user vector and bias.
Its round is :func:`fedrec.core.training.ratings.train_rating_user` (``user-epochs`` on
the local part with the global part frozen, then ``local-epochs`` on everything, a
generator seeded by ``(seed, user, round)``); ``weight-decay`` is the per-rating L2 ``λ``
of the MSE loss. The global mean ``μ`` starts at the mean training rating (a sum and a
count per client: aggregates). Evaluation refits the local part for
``reconstruct-epochs`` with the global part frozen and predicts the held-out ratings.

Pooling: a node reports ``mse = Σ_u n_u·rmse_u² / Σ_u n_u`` and ``mae`` likewise, weighted
by its ``Σ_u n_u`` held-out ratings, so the server's weighted mean is the pooled error
over every held-out rating, and ``rmse = √mse``. Refused: every DP mode (the DP
evaluation releases metrics clamped to [0, 1]; squared rating errors are not) and
deployment (device CSVs carry no ratings).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from fedrec.core.arrays import Arrays
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.loaders import load_dataset
from fedrec.core.families.base import ModelFamily, ModelParts, UpdateTransform, add_user
from fedrec.core.models.registry import build_model
from fedrec.core.training.cohort import CohortResult, empty_result
from fedrec.core.training.local_round import new_local_parameters
from fedrec.core.training.ratings import (
    MAE,
    NUM_RATINGS,
    RMSE,
    RatingSplit,
    RatingTrainingConfig,
    UserRatings,
    holdout_ratings,
    initial_rating_arrays,
    train_rating_user,
    user_rating_metrics,
)

MSE = "mse"


@lru_cache(maxsize=4)
def cached_rating_split(dataset: str, data_dir: str, seed: int, test_fraction: float) -> RatingSplit:
    """The rating hold-out of a dataset, built once per process (``ValueError`` without ratings)."""
    data = load_dataset(dataset, data_dir, seed)
    if data.ratings is None:
        raise ValueError(f"dataset {dataset!r} has no ratings: explicit-mf predicts stars")
    return holdout_ratings(data, test_fraction, seed)


def rating_training(config: RunConfig) -> RatingTrainingConfig:
    """The client's MSE training settings ``config`` names."""
    return RatingTrainingConfig(lr=config.lr, batch_size=config.batch_size, optimizer=config.client_optimizer,
                                l2=config.weight_decay)


class RatingFamily(ModelFamily):
    name = "ratings"
    models = ("explicit-mf",)

    def refusal(self, config: RunConfig) -> str | None:
        if config.dp != "off":
            return ("no DP mode yet: the DP evaluation releases metrics clamped to [0, 1], and rating errors "
                    "(stars²) are not")
        if config.catalogue:
            return "devices hold (user, item) CSVs without ratings"
        return None

    def load_split(self, config: RunConfig) -> RatingSplit:
        return cached_rating_split(config.dataset, config.data_dir, config.seed, config.rating_test_fraction)

    def user_data(self, split: RatingSplit, user: int, for_evaluation: bool = True) -> UserRatings:
        return split.user_ratings(user)

    def evaluated_users(self, split: RatingSplit) -> list[int]:
        return [int(u) for u in np.flatnonzero(np.diff(split.test_indptr) > 0)]

    def parts(self, config: RunConfig, n_items: int) -> ModelParts:
        model = build_model(config.model, 1, n_items, config.dim)
        shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
        return ModelParts(tuple(model.global_parameter_names), tuple(model.local_parameter_names), shapes)

    def initial_global(self, config: RunConfig, split: RatingSplit) -> Arrays:
        return initial_rating_arrays(config.model, split.n_items, config.dim, config.seed, split.train_mean())

    def item_tables(self, config: RunConfig, n_items: int) -> frozenset[str]:
        return frozenset(build_model(config.model, 1, n_items, config.dim).item_table_names)

    def train_users(self, config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                    users: Sequence[UserRatings], server_round: int, device: str | torch.device = "cpu",
                    update_transform: UpdateTransform | None = None) -> CohortResult:
        training = rating_training(config)
        result = empty_result(global_arrays)
        for local, user in zip(stored, users):
            if len(user.train_items) == 0:
                continue
            if local is None:
                local = new_local_parameters(config.model, user.n_items, config.dim, config.seed, user.user)
            one = train_rating_user(config.model, config.dim, global_arrays, local, user, training,
                                    config.local_epochs, np.random.default_rng([config.seed, user.user, server_round]),
                                    user_epochs=config.user_epochs)
            add_user(result, user.user, one.update, one.local, one.num_examples, one.loss, update_transform)
        return result

    def evaluate_users(self, config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                       users: Sequence[UserRatings], device: str | torch.device = "cpu") -> list[dict[str, float]]:
        training = rating_training(config)
        return [user_rating_metrics(config.model, config.dim, global_arrays, local, user, training,
                                    config.reconstruct_epochs, config.seed) for local, user in zip(stored, users)]

    def pool(self, rows: list[dict[str, float]]) -> tuple[dict[str, float], float]:
        rated = [row for row in rows if row[NUM_RATINGS] > 0]
        total = float(sum(row[NUM_RATINGS] for row in rated))
        if total == 0:
            return {MSE: 0.0, MAE: 0.0}, 0.0
        mse = sum(row[NUM_RATINGS] * row[RMSE] ** 2 for row in rated) / total
        return {MSE: mse, MAE: sum(row[NUM_RATINGS] * row[MAE] for row in rated) / total}, total

    def finish(self, metrics: dict[str, float]) -> dict[str, float]:
        out = {key: value for key, value in metrics.items() if key != MSE}
        if MSE in metrics:
            out[RMSE] = math.sqrt(metrics[MSE])
        return out
