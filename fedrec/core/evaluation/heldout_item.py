"""Top-K ranking metrics for one held-out item, as pure functions.

Ranks are 0-based: rank 0 is the top of the list. Ties are resolved by the
*mid-rank* convention — an item tied with ``t`` others is placed after half of
them — so that a model that scores everything equally earns what a random order
would on average, never a free hit.

* HR@K = 1 if rank < K else 0.
* NDCG@K = 1 / log2(rank + 2) if rank < K else 0 (one relevant item, so IDCG = 1).
* Recall@K over several held-out items = share of their (mid-)ranks below K.

The same metrics of a whole ranked list against a set of items are in :mod:`fedrec.core.evaluation.lists`.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray


def rank_of_target(target_score: float, other_scores: NDArray[np.floating]) -> float:
    """0-based rank of a target among others: #greater + #tied / 2."""
    others = np.asarray(other_scores)
    if np.isnan(target_score) or np.isnan(others).any():
        raise ValueError("scores contain NaN; cannot rank")
    greater = int(np.count_nonzero(others > target_score))
    tied = int(np.count_nonzero(others == target_score))
    return greater + tied / 2.0


def hit_ratio_at_k(rank: float, k: int) -> float:
    return 1.0 if rank < k else 0.0


def ndcg_at_k(rank: float, k: int) -> float:
    return 1.0 / math.log2(rank + 2.0) if rank < k else 0.0


def recall_from_ranks(ranks: list[float], k: int) -> float:
    """Share of relevant items whose (mid-)rank is below ``k``; ties as in :func:`rank_of_target`."""
    if len(ranks) == 0:
        raise ValueError("recall is undefined without relevant items")
    return float(np.mean([rank < k for rank in ranks]))
