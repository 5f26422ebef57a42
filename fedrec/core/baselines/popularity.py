"""ItemPop: every user gets the same scores, s(u, i) = c_i, the number of training interactions of i.

The non-personal floor every personalised model must beat: :func:`item_popularity` counts,
:func:`evaluate_itempop` evaluates them like any model, :class:`ItemPop` scores with them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedrec.core.baselines.scorer import check_users
from fedrec.core.data.split import LeaveOneOutSplit
from fedrec.core.evaluation.protocols import evaluate_user, mean_metrics


def item_popularity(split: LeaveOneOutSplit) -> NDArray[np.float64]:
    """``(n_items,)`` count of training interactions per item."""
    return np.bincount(split.train_items, minlength=split.n_items).astype(np.float64)


def evaluate_itempop(split: LeaveOneOutSplit, k: int = 10) -> dict[str, float]:
    """Mean metrics of ItemPop over every evaluated user."""
    scores = item_popularity(split)
    rows = [evaluate_user(scores, split.user_data(int(u)), k) for u in split.evaluated_users()]
    return mean_metrics(rows)


class ItemPop:
    """s(u, i) = c_i = #training interactions of item i, the same for every user."""

    def __init__(self) -> None:
        self.popularity: NDArray[np.float32] | None = None
        self.n_users = 0

    def fit(self, split: LeaveOneOutSplit) -> ItemPop:
        self.popularity = item_popularity(split).astype(np.float32)
        self.n_users = split.n_users
        return self

    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        if self.popularity is None:
            raise RuntimeError("ItemPop is not fitted: call fit(split) first")
        users = check_users(users, self.n_users)
        return np.tile(self.popularity, (len(users), 1))
