"""Train or evaluate a group of users with the configured executor; one entry point.

``per-client`` runs :func:`~fedrec.core.training.local_round.user_round` user after user (the
reference); ``cohort`` runs :func:`~fedrec.core.training.cohort.cohort_round` on all of them at
once. Both return a :class:`~fedrec.core.training.cohort.CohortResult` — ``Σ n_b Δ_b``, ``Σ n_b``
and each trained user's new vector, example count and loss — so the ClientApp, the
pure-torch loop and the floor do not care which executor ran.
"""

from __future__ import annotations

from typing import Sequence

import torch

from fedrec.core.arrays import Arrays
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.split import UserData
from fedrec.core.training.cohort import CohortResult, cohort_round, empty_result
from fedrec.core.training.cohort_evaluation import cohort_metrics
from fedrec.core.training.local_round import user_metrics, user_round


def train_users(config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                users: Sequence[UserData], server_round: int,
                device: str | torch.device = "cpu") -> CohortResult:
    """Each user's local round; users without training items are skipped."""
    if config.executor == "cohort":
        return cohort_round(config, global_arrays, stored, users, server_round, device=device)
    if len(stored) != len(users):
        raise ValueError("one stored-locals entry per user is required")
    result = empty_result(global_arrays)
    for local, user in zip(stored, users):
        if len(user.train_items) == 0:
            continue
        one = user_round(config, global_arrays, local, user, server_round)
        for name, value in one.update.items():
            result.update_sum[name] += one.num_examples * value
        result.weight += one.num_examples
        result.users.append(user.user)
        result.locals.append(one.local)
        result.num_examples.append(one.num_examples)
        result.losses.append(one.loss)
    return result


def evaluate_users(config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                   users: Sequence[UserData], device: str | torch.device = "cpu") -> list[dict[str, float]]:
    """Each user's ranking metrics (users must have a test item)."""
    if config.executor == "cohort":
        return cohort_metrics(config, global_arrays, stored, users, device=device)
    return [user_metrics(config, global_arrays, local, user) for local, user in zip(stored, users)]
