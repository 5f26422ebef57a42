"""ItemPop: every user gets the same scores, s(u, i) = c_i, the number of training interactions of i.

The non-personal floor every personalised model must beat. The counts come from
:func:`fedrec.core.baselines.itempop.item_popularity`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedrec.core.baselines.itempop import item_popularity
from fedrec.core.baselines.scorer import check_users
from fedrec.core.data.split import LeaveOneOutSplit


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
