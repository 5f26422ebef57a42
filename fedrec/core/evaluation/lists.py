"""Top-K list metrics, catalogue-level beyond-accuracy metrics and rating errors.

:mod:`fedrec.core.evaluation.heldout_item` scores *one* held-out item by its rank. This module
scores a whole ranked list against a *set* of held-out relevant items, the
top-K lists of all users against the catalogue, and rating predictions.

Per user — ``ranked`` is item ids best first, ``R`` the set of relevant items,
``hits = |R ∩ ranked[:K]|``, positions are 0-based:

* precision@K = hits / K (a list shorter than K counts its missing slots as misses).
* recall@K = hits / |R|.
* F1@K = 2·P·R / (P + R), 0 when P = R = 0.
* MRR@K = 1 / (p + 1) for the first relevant position p < K, else 0.
* HR@K = 1 if hits > 0 else 0.
* NDCG@K = DCG / IDCG with binary gains, DCG = Σ_{p<K, ranked[p]∈R} 1/log2(p + 2),
  IDCG = Σ_{p < min(|R|, K)} 1/log2(p + 2).

Over all users' top-K lists ``L_u``:

* coverage = |∪_u L_u| / n_items.
* intra-list diversity = mean_u [ mean_{i<j in L_u} (1 − cos(v_i, v_j)) ].
* novelty = mean over every recommended slot of −log2(pop(i)), pop(i) = count(i) / n_users.

Ratings: RMSE = sqrt(mean((ŷ − y)²)), MAE = mean(|ŷ − y|).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from fedrec.core.evaluation.heldout_item import hit_ratio_at_k, ndcg_at_k, recall_at_k

# --------------------------------------------------------------------------- checks


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


def _check_item_ids(lists: Sequence[NDArray[np.integer]], n_items: int) -> list[NDArray[np.integer]]:
    if n_items < 1:
        raise ValueError(f"catalogue is empty (n_items = {n_items})")
    if len(lists) == 0:
        raise ValueError("no top-K lists given")
    checked = []
    for user, items in enumerate(lists):
        items = np.asarray(items)
        if items.ndim != 1:
            raise ValueError(f"list {user}: expected a 1-D array of item ids, got shape {items.shape}")
        if len(items) and (items.min() < 0 or items.max() >= n_items):
            raise ValueError(f"list {user}: item ids must lie in [0, {n_items}), got {items.min()}..{items.max()}")
        checked.append(items)
    return checked


# --------------------------------------------------------------------------- one user's list


def precision_at_k(ranked: NDArray[np.integer], relevant: NDArray[np.integer], k: int) -> float:
    """|relevant ∩ ranked[:k]| / k; 0 when nothing is relevant."""
    _check_k(k)
    ranked = _as_ranked(ranked)
    return len(_hit_positions(ranked, np.asarray(relevant), k)) / k


def list_recall_at_k(ranked: NDArray[np.integer], relevant: NDArray[np.integer], k: int) -> float:
    """|relevant ∩ ranked[:k]| / |relevant| (delegates to :func:`fedrec.core.evaluation.heldout_item.recall_at_k`)."""
    _check_k(k)
    ranked = _as_ranked(ranked)
    return recall_at_k(ranked[:k], _as_relevant(relevant, "recall"))


def f1_at_k(ranked: NDArray[np.integer], relevant: NDArray[np.integer], k: int) -> float:
    """Harmonic mean 2·P·R / (P + R) of precision@k and recall@k; 0 when both are 0."""
    p = precision_at_k(ranked, relevant, k)
    r = list_recall_at_k(ranked, relevant, k)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def mrr_at_k(ranked: NDArray[np.integer], relevant: NDArray[np.integer], k: int) -> float:
    """1 / (p + 1) for the first relevant 0-based position p < k; 0 if none is in the top k."""
    _check_k(k)
    hits = _hit_positions(_as_ranked(ranked), np.asarray(relevant), k)
    return 1.0 / (hits[0] + 1) if len(hits) else 0.0


def list_hit_ratio_at_k(ranked: NDArray[np.integer], relevant: NDArray[np.integer], k: int) -> float:
    """1 if any relevant item is in ranked[:k], else 0 (HR of the first hit's position)."""
    _check_k(k)
    hits = _hit_positions(_as_ranked(ranked), np.asarray(relevant), k)
    return hit_ratio_at_k(float(hits[0]), k) if len(hits) else 0.0


def list_ndcg_at_k(ranked: NDArray[np.integer], relevant: NDArray[np.integer], k: int) -> float:
    """Binary-gain NDCG: Σ_{hits p<k} 1/log2(p+2) over Σ_{p<min(|relevant|,k)} 1/log2(p+2).

    Each term is :func:`fedrec.core.evaluation.heldout_item.ndcg_at_k` of one position; with one
    relevant item this equals that function of its rank.
    """
    _check_k(k)
    ranked = _as_ranked(ranked)
    relevant = _as_relevant(relevant, "NDCG")
    dcg = sum(ndcg_at_k(float(p), k) for p in _hit_positions(ranked, relevant, k))
    idcg = sum(ndcg_at_k(float(p), k) for p in range(min(len(relevant), k)))
    return dcg / idcg


# --------------------------------------------------------------------------- catalogue level


def catalog_coverage(top_k_lists: Sequence[NDArray[np.integer]], n_items: int) -> float:
    """|∪_u L_u| / n_items: share of the catalogue recommended to at least one user."""
    lists = _check_item_ids(top_k_lists, n_items)
    return len(np.unique(np.concatenate(lists))) / n_items


def intra_list_diversity(top_k_lists: Sequence[NDArray[np.integer]], item_vectors: NDArray[np.floating]) -> float:
    """mean_u of the mean over unordered pairs i<j in L_u of (1 − cos(v_i, v_j)).

    ``item_vectors (n_items, dim)`` are item embeddings or features. Range [0, 2];
    0 means every list holds items pointing the same way. Every list needs at
    least two items and every listed item a non-zero vector.
    """
    vectors = np.asarray(item_vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"item_vectors must have shape (n_items, dim), got {vectors.shape}")
    if np.isnan(vectors).any():
        raise ValueError("item_vectors contain NaN")
    lists = _check_item_ids(top_k_lists, vectors.shape[0])
    per_user = []
    for user, items in enumerate(lists):
        if len(np.unique(items)) < 2:
            raise ValueError(f"list {user}: intra-list diversity needs at least 2 distinct items, got {len(items)}")
        v = vectors[items]
        norms = np.linalg.norm(v, axis=1)
        if (norms == 0).any():
            raise ValueError(f"list {user}: item {items[norms == 0][0]} has a zero vector; cosine is undefined")
        unit = v / norms[:, None]
        cos = unit @ unit.T
        upper = np.triu_indices(len(items), k=1)
        per_user.append(float(np.mean(1.0 - cos[upper])))
    return float(np.mean(per_user))


def novelty(top_k_lists: Sequence[NDArray[np.integer]], item_counts: NDArray[np.integer], n_users: int) -> float:
    """Mean over every recommended (user, item) slot of −log2(pop(i)), in bits.

    pop(i) = max(count(i), 1) / n_users, where ``item_counts (n_items,)`` holds the
    number of training interactions (users) of each item. Smoothing: an item never
    seen in training counts as seen once, so its novelty is log2(n_users), the
    highest a seen item can have, rather than infinity.
    """
    counts = np.asarray(item_counts)
    if counts.ndim != 1:
        raise ValueError(f"item_counts must have shape (n_items,), got {counts.shape}")
    if n_users < 1:
        raise ValueError(f"n_users must be at least 1, got {n_users}")
    if len(counts) and (counts.min() < 0 or counts.max() > n_users):
        raise ValueError(f"item_counts must lie in [0, n_users = {n_users}], got {counts.min()}..{counts.max()}")
    lists = _check_item_ids(top_k_lists, len(counts))
    items = np.concatenate(lists)
    if len(items) == 0:
        raise ValueError("all top-K lists are empty; novelty is undefined")
    popularity = np.maximum(counts[items], 1) / n_users
    return float(np.mean(-np.log2(popularity)))


# --------------------------------------------------------------------------- ratings


def _rating_errors(predicted: NDArray[np.floating], actual: NDArray[np.floating]) -> NDArray[np.floating]:
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if predicted.shape != actual.shape:
        raise ValueError(f"predicted shape {predicted.shape} does not match actual shape {actual.shape}")
    if predicted.size == 0:
        raise ValueError("no ratings given")
    if np.isnan(predicted).any() or np.isnan(actual).any():
        raise ValueError("ratings contain NaN")
    return predicted - actual


def rmse(predicted: NDArray[np.floating], actual: NDArray[np.floating]) -> float:
    """sqrt(mean((ŷ − y)²)), in rating units."""
    return math.sqrt(float(np.mean(_rating_errors(predicted, actual) ** 2)))


def mae(predicted: NDArray[np.floating], actual: NDArray[np.floating]) -> float:
    """mean(|ŷ − y|), in rating units."""
    return float(np.mean(np.abs(_rating_errors(predicted, actual))))
