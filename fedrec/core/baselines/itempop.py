"""ItemPop: rank items by their number of training interactions (non-personal baseline)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

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
