"""Evaluation of one user's scores with both protocols used in the literature.

* **Sampled (NCF protocol)**: the test item is ranked among the user's 99 sampled
  non-interacted items; keys ``hr@K``, ``ndcg@K``.
* **Full ranking**: the test item is ranked among every item the user has not
  trained on (training and validation items are removed); keys ``full_hr@K``,
  ``full_ndcg@K``, ``full_recall@K`` (ranks by the same mid-rank rule, so with one
  held-out item recall equals HR).

* **Validation** (with ``validation=True``, for model selection): the user's validation
  item — the interaction before the test item, never trained on — ranked among the same
  99 sampled items; keys ``val_hr@K``, ``val_ndcg@K``. A run that selects its model by
  these (:mod:`fedrec.core.evaluation.selection`) never looks at the test item to choose.

Both the clients and the central twin call :func:`evaluate_user`, so numbers from
the two are comparable by construction.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedrec.core.data.split import NO_ITEM, UserData
from fedrec.core.evaluation.heldout_item import hit_ratio_at_k, ndcg_at_k, rank_of_target, recall_from_ranks

METRIC_NAMES = ("hr", "ndcg", "full_hr", "full_ndcg", "full_recall")
VALIDATION_NAMES = ("val_hr", "val_ndcg")


def metric_keys(k: int) -> tuple[str, ...]:
    return tuple(f"{name}@{k}" for name in METRIC_NAMES)


def validation_keys(k: int) -> tuple[str, ...]:
    return tuple(f"{name}@{k}" for name in VALIDATION_NAMES)


def evaluate_user(scores: NDArray[np.floating], user: UserData, k: int, validation: bool = False) -> dict[str, float]:
    """Metrics of one user from ``scores (n_items,)`` over the whole catalogue (and, with
    ``validation``, of its validation item among the same sampled items)."""
    if not user.has_test:
        raise ValueError(f"user {user.user} has no test item")
    if user.eval_negatives is None:
        raise ValueError(f"user {user.user}'s data was fetched for training only (no evaluation negatives)")
    if scores.shape != (user.n_items,):
        raise ValueError(f"expected scores of shape ({user.n_items},), got {scores.shape}")
    target = float(scores[user.test_item])
    sampled_rank = rank_of_target(target, scores[user.eval_negatives])

    candidates = np.ones(user.n_items, dtype=bool)
    candidates[user.excluded_from_ranking()] = False
    candidates[user.test_item] = False
    full_rank = rank_of_target(target, scores[candidates])
    validation_metrics: dict[str, float] = {}
    if validation:
        if user.validation_item == NO_ITEM:
            raise ValueError(f"user {user.user} has no validation item (fewer than 3 interactions); "
                             "model selection by validation needs one for every evaluated user")
        validation_rank = rank_of_target(float(scores[user.validation_item]), scores[user.eval_negatives])
        validation_metrics = {f"val_hr@{k}": hit_ratio_at_k(validation_rank, k),
                              f"val_ndcg@{k}": ndcg_at_k(validation_rank, k)}
    return {
        f"hr@{k}": hit_ratio_at_k(sampled_rank, k),
        f"ndcg@{k}": ndcg_at_k(sampled_rank, k),
        f"full_hr@{k}": hit_ratio_at_k(full_rank, k),
        f"full_ndcg@{k}": ndcg_at_k(full_rank, k),
        f"full_recall@{k}": recall_from_ranks([full_rank], k),
        **validation_metrics,
    }


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Average of per-user metric dicts (every user weighs the same)."""
    if not rows:
        return {}
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
