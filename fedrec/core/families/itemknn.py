"""Federated item-kNN (``item-knn``) as a family: one round of co-occurrence shares.

Item-based kNN needs two sums over users of the binary user×item matrix ``X``: the item
co-occurrence ``XᵀX`` and the item counts (:mod:`fedrec.core.baselines.federated_itemknn`
has the algorithm, its L2 bound and its privacy analysis). As a family:

* the **global arrays** are ``cooc`` ``(n, n)`` — only the strict upper triangle is ever
  filled — and ``counts`` ``(n,)``, zero at round 0; there is no local part;
* a user's **round** is its share (:func:`~fedrec.core.baselines.federated_itemknn.client_cooccurrence`,
  at most ``knn-max-items`` = M items, the subset seeded by ``(seed, user, TRUNCATION_STREAM)``):
  ``Δ`` is 1 on each of its pairs ``i < j`` and on each of its items; ``‖Δ‖₂ ≤ C(M) =
  √(M(M+1)/2)``; every user weighs 1;
* the server **adds** the shares (``releases_sum``): ``x ← x + Σ_u Δ_u``; under
  ``user-central`` DP it adds ``N(0, σ²C²)`` to the sum (run with ``--clip`` = C(M) so
  that no share is scaled down);
* **evaluation** builds the shrunk-cosine similarity (``knn-shrink``, ``knn-neighbours``
  per item) from the global arrays and ranks the held-out item by ``Σ_{j ∈ train} s_ij``.

It is one round (``--rounds 1``: a second would add every share again), runs on the
cohort executor (a share is a dense ``n²`` array: one reply per user would move
``n_users·n²·4`` bytes), with the FedAvg server step (``fedavg`` or ``fedavg-slr``: no item
table is scaled), and refuses record-level DP (a user's share is its whole item set).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from fedrec.core.arrays import Arrays
from fedrec.core.baselines.federated_itemknn import (
    TRUNCATION_STREAM,
    client_cooccurrence,
    item_similarity,
    score_user,
)
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.split import LeaveOneOutSplit, UserData
from fedrec.core.evaluation.protocols import evaluate_user
from fedrec.core.families.base import ModelFamily, ModelParts, UpdateTransform
from fedrec.core.families.implicit import run_split
from fedrec.core.training.cohort import CohortResult, empty_result

COOC, COUNTS = "cooc", "counts"


def similarity_of(config: RunConfig, global_arrays: Arrays) -> np.ndarray:
    """The pruned shrunk-cosine similarity ``(n, n)`` of the summed shares."""
    upper = np.triu(np.asarray(global_arrays[COOC], dtype=np.float64), k=1)
    return item_similarity(upper + upper.T, np.asarray(global_arrays[COUNTS], dtype=np.float64),
                           config.knn_shrink, config.knn_neighbours)


class ItemKnnFamily(ModelFamily):
    name = "item-knn"
    models = ("item-knn",)
    releases_sum = True

    def refusal(self, config: RunConfig) -> str | None:
        if config.rounds != 1:
            return "it is one round of co-occurrence shares (a second round would add them again): pass --rounds 1"
        if config.executor != "cohort" and not config.catalogue:
            return ("a share is a dense n_items² array, so one reply per user would move n_users·n_items²·4 "
                    "bytes: use --executor cohort")
        if config.aggregation not in ("fedavg", "fedavg-slr"):
            return f"the server adds the shares; aggregation {config.aggregation} would not"
        if config.dp == "record":
            return "dp record protects one interaction; a share is built from the user's whole item set"
        if config.catalogue:
            return "not deployed yet: a device would upload an n_items² array"
        return None

    def load_split(self, config: RunConfig) -> LeaveOneOutSplit:
        return run_split(config)

    def user_data(self, split: LeaveOneOutSplit, user: int, for_evaluation: bool = True) -> UserData:
        return split.user_data(user, for_evaluation=for_evaluation)

    def parts(self, config: RunConfig, n_items: int) -> ModelParts:
        return ModelParts((COOC, COUNTS), (), {COOC: (n_items, n_items), COUNTS: (n_items,)})

    def initial_global(self, config: RunConfig, split: LeaveOneOutSplit) -> Arrays:
        n = split.n_items
        return {COOC: np.zeros((n, n), dtype=np.float32), COUNTS: np.zeros(n, dtype=np.float32)}

    def train_users(self, config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                    users: Sequence[UserData], server_round: int, device: str | torch.device = "cpu",
                    update_transform: UpdateTransform | None = None) -> CohortResult:
        result = empty_result(global_arrays)
        for user in users:
            if len(user.train_items) == 0:
                continue
            share = client_cooccurrence(user.train_items, user.n_items, config.knn_max_items,
                                        np.random.default_rng([config.seed, user.user, TRUNCATION_STREAM]))
            if update_transform is None:  # add the 1s in place: no dense n² array per user
                np.add.at(result.update_sum[COOC], (share.pairs[:, 0], share.pairs[:, 1]), 1.0)
                result.update_sum[COUNTS][share.items] += 1.0
            else:
                dense = {COOC: np.zeros_like(global_arrays[COOC]), COUNTS: np.zeros_like(global_arrays[COUNTS])}
                dense[COOC][share.pairs[:, 0], share.pairs[:, 1]] = 1.0
                dense[COUNTS][share.items] = 1.0
                for name, value in update_transform(dense).items():
                    result.update_sum[name] += value
            result.weight += 1.0
            result.users.append(user.user)
            result.locals.append({})
            result.num_examples.append(1)
            result.losses.append(0.0)
        return result

    def evaluate_users(self, config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                       users: Sequence[UserData], device: str | torch.device = "cpu") -> list[dict[str, float]]:
        if not users:
            return []
        similarity = similarity_of(config, global_arrays)
        return [evaluate_user(score_user(similarity, user.train_items), user, config.eval_k) for user in users]
