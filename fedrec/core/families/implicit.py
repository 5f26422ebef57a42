"""The implicit-feedback rankers (mf, gmf, mlp, neumf, hybrid, content) as a family.

A user holds its leave-one-out share (:class:`~fedrec.core.data.split.UserData`) and a
private user vector; its local round is :func:`fedrec.core.training.local_round.user_round`
(per-client) or the vectorised :func:`fedrec.core.training.cohort.cohort_round` (cohort),
both through :mod:`fedrec.core.training.executors`; its evaluation ranks the held-out item
(:mod:`fedrec.core.evaluation.protocols`). Every executor and every DP mode runs here
(record-level DP: per-client only, and not for the feature models).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch

from fedrec.core.arrays import Arrays, to_numpy
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import LeaveOneOutSplit, UserData, leave_one_out
from fedrec.core.families.base import ModelFamily, ModelParts, UpdateTransform, add_user
from fedrec.core.models.base import global_state
from fedrec.core.models.registry import FEATURE_MODELS, MODELS
from fedrec.core.models.run_model import build_run_model
from fedrec.core.training.cohort import CohortResult, empty_result
from fedrec.core.training.executors import evaluate_users, train_users
from fedrec.core.training.local_round import user_round


@lru_cache(maxsize=4)
def cached_split(dataset: str, data_dir: str, seed: int, eval_negatives: int) -> LeaveOneOutSplit:
    """The leave-one-out split of a dataset, built once per process."""
    return leave_one_out(load_dataset(dataset, data_dir, seed), seed=seed, eval_negatives=eval_negatives)


def run_split(config: RunConfig) -> LeaveOneOutSplit:
    """The leave-one-out split ``config`` names."""
    return cached_split(config.dataset, config.data_dir, config.seed, config.eval_negatives)


@lru_cache(maxsize=8)
def _parts(config: RunConfig, n_items: int) -> ModelParts:
    model = build_run_model(config, 1, n_items)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    return ModelParts(tuple(model.global_parameter_names), tuple(model.local_parameter_names), shapes)


class ImplicitFamily(ModelFamily):
    name = "implicit"
    models = (*MODELS, *FEATURE_MODELS)

    def load_split(self, config: RunConfig) -> LeaveOneOutSplit:
        return run_split(config)

    def user_data(self, split: LeaveOneOutSplit, user: int, for_evaluation: bool = True) -> UserData:
        return split.user_data(user, for_evaluation=for_evaluation)

    def parts(self, config: RunConfig, n_items: int) -> ModelParts:
        return _parts(config, n_items)

    def initial_global(self, config: RunConfig, split: LeaveOneOutSplit | None) -> Arrays:
        n_items = split.n_items if split is not None else config.num_items
        return initial_implicit_global(config, n_items)

    def item_tables(self, config: RunConfig, n_items: int) -> frozenset[str]:
        return frozenset(build_run_model(config, 1, n_items).item_table_names)

    def train_users(self, config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                    users: Sequence[UserData], server_round: int, device: str | torch.device = "cpu",
                    update_transform: UpdateTransform | None = None) -> CohortResult:
        if update_transform is None:
            return train_users(config, global_arrays, stored, users, server_round, device=device)
        if config.executor == "cohort":
            from fedrec.core.training.cohort import cohort_round

            return cohort_round(config, global_arrays, stored, users, server_round, device=device,
                                update_transform=update_transform)
        result = empty_result(global_arrays)
        for local, user in zip(stored, users):
            if len(user.train_items) == 0:
                continue
            one = user_round(config, global_arrays, local, user, server_round)
            add_user(result, user.user, one.update, one.local, one.num_examples, one.loss, update_transform)
        return result

    def evaluate_users(self, config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                       users: Sequence[UserData], device: str | torch.device = "cpu") -> list[dict[str, float]]:
        return evaluate_users(config, global_arrays, stored, users, device=device)


def initial_implicit_global(config: RunConfig, n_items: int) -> Arrays:
    """The global part of ``config.model`` for ``n_items`` items, seeded by ``config.seed``."""
    return to_numpy(global_state(build_run_model(config, 1, n_items, seed=config.seed)))

