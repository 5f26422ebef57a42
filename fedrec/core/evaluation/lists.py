"""Metrics of one user's ranked top-K list against a *set* of held-out relevant items.

:mod:`fedrec.core.evaluation.heldout_item` scores *one* held-out item by its rank; the same names here
(``hit_ratio_at_k``, ``ndcg_at_k``) score a list, and agree with it when one item is relevant.
Catalogue-level metrics are in :mod:`fedrec.core.evaluation.catalogue`, rating errors in
:mod:`fedrec.core.evaluation.ratings`.

``ranked`` is item ids best first, ``R`` the set of relevant items, ``hits = |R ∩ ranked[:K]|``,
positions are 0-based:

* precision@K = hits / K (a list shorter than K counts its missing slots as misses).
* recall@K = hits / |R|.
* F1@K = 2·P·R / (P + R), 0 when P = R = 0.
* MRR@K = 1 / (p + 1) for the first relevant position p < K, else 0.
* HR@K = 1 if hits > 0 else 0.
* NDCG@K = DCG / IDCG with binary gains, DCG = Σ_{p<K, ranked[p]∈R} 1/log2(p + 2),
  IDCG = Σ_{p < min(|R|, K)} 1/log2(p + 2).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedrec.core.evaluation import heldout_item


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"K must be at least 1, got {k}")


def _as_ranked(ranked: NDArray[np.integer]) -> NDArray[np.integer]:
    ranked = np.asarray(ranked)
    if ranked.ndim != 1:
        raise ValueError(f"ranked list must be 1-D (item ids best first), got shape {ranked.shape}")
    if len(np.unique(ranked)) != len(ranked):
        raise ValueError("ranked list contains the same item twice")
    return ranked


def _as_relevant(relevant: NDArray[np.integer], metric: str) -> NDArray[np.integer]:
    relevant = np.unique(np.asarray(relevant))
    if len(relevant) == 0:
        raise ValueError(f"{metric} is undefined without relevant items")
    return relevant


def _hit_positions(ranked: NDArray[np.integer], relevant: NDArray[np.integer], k: int) -> NDArray[np.intp]:
    """0-based positions p < k with ``ranked[p]`` relevant, ascending."""
    return np.flatnonzero(np.isin(ranked[:k], relevant))


def precision_at_k(ranked: NDArray[np.integer], relevant: NDArray[np.integer], k: int) -> float:
    """|relevant ∩ ranked[:k]| / k; 0 when nothing is relevant."""
    _check_k(k)
    ranked = _as_ranked(ranked)
    return len(_hit_positions(ranked, np.asarray(relevant), k)) / k


def recall_at_k(ranked: NDArray[np.integer], relevant: NDArray[np.integer], k: int) -> float:
    """|relevant ∩ ranked[:k]| / |relevant|."""
    _check_k(k)
    ranked = _as_ranked(ranked)
    relevant = _as_relevant(relevant, "recall")
    return len(_hit_positions(ranked, relevant, k)) / len(relevant)


def f1_at_k(ranked: NDArray[np.integer], relevant: NDArray[np.integer], k: int) -> float:
    """Harmonic mean 2·P·R / (P + R) of precision@k and recall@k; 0 when both are 0."""
    p = precision_at_k(ranked, relevant, k)
    r = recall_at_k(ranked, relevant, k)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def mrr_at_k(ranked: NDArray[np.integer], relevant: NDArray[np.integer], k: int) -> float:
    """1 / (p + 1) for the first relevant 0-based position p < k; 0 if none is in the top k."""
    _check_k(k)
    hits = _hit_positions(_as_ranked(ranked), np.asarray(relevant), k)
    return 1.0 / (hits[0] + 1) if len(hits) else 0.0


def hit_ratio_at_k(ranked: NDArray[np.integer], relevant: NDArray[np.integer], k: int) -> float:
    """1 if any relevant item is in ranked[:k], else 0 (HR of the first hit's position)."""
    _check_k(k)
    hits = _hit_positions(_as_ranked(ranked), np.asarray(relevant), k)
    return heldout_item.hit_ratio_at_k(float(hits[0]), k) if len(hits) else 0.0


def ndcg_at_k(ranked: NDArray[np.integer], relevant: NDArray[np.integer], k: int) -> float:
    """Binary-gain NDCG: Σ_{hits p<k} 1/log2(p+2) over Σ_{p<min(|relevant|,k)} 1/log2(p+2).

    Each term is :func:`fedrec.core.evaluation.heldout_item.ndcg_at_k` of one position; with one
    relevant item this equals that function of its rank.
    """
    _check_k(k)
    ranked = _as_ranked(ranked)
    relevant = _as_relevant(relevant, "NDCG")
    dcg = sum(heldout_item.ndcg_at_k(float(p), k) for p in _hit_positions(ranked, relevant, k))
    idcg = sum(heldout_item.ndcg_at_k(float(p), k) for p in range(min(len(relevant), k)))
    return dcg / idcg
