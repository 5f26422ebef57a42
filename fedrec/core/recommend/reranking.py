"""Turning one user's score vector into a recommendation list.

* :func:`top_k` — the K best-scored items, seen items excluded.
* :func:`threshold_select` — items scoring at least τ, best first, at most K.
* :func:`mmr_rerank` — Maximal Marginal Relevance (Carbonell & Goldstein, 1998,
  "The use of MMR, diversity-based reranking for reordering documents and
  producing summaries"). From a pool P of the top ``pool`` items, greedily add to
  the list S the item

      argmax_{i ∈ P \\ S}  λ·rel(i) − (1 − λ)·max_{j ∈ S} cos(v_i, v_j)

  (the max is 0 while S is empty). rel(i) is the score min-max scaled over P to
  [0, 1] (1 for every item when all pool scores are equal), so λ trades relevance
  against similarity on comparable scales. λ = 1 is plain top-K; λ = 0 picks the
  best item, then always the one least similar to those already chosen.

Ties are broken towards the lower item id everywhere, so results are deterministic.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def _ranked_candidates(scores: NDArray[np.floating], k: int, exclude: NDArray[np.integer] | None) -> NDArray[np.intp]:
    """All non-excluded item ids, best score first, ties by lower id."""
    scores = np.asarray(scores)
    if k < 1:
        raise ValueError(f"K must be at least 1, got {k}")
    if scores.ndim != 1:
        raise ValueError(f"scores must have shape (n_items,), got {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; cannot rank")
    allowed = np.ones(len(scores), dtype=bool)
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64)
        if len(exclude) and (exclude.min() < 0 or exclude.max() >= len(scores)):
            raise ValueError(f"excluded item ids must lie in [0, {len(scores)}), got {exclude.min()}..{exclude.max()}")
        allowed[exclude] = False
    order = np.argsort(-scores, kind="stable")
    return order[allowed[order]]


def top_k(scores: NDArray[np.floating], k: int, exclude: NDArray[np.integer] | None = None) -> NDArray[np.intp]:
    """Ids of the k highest ``scores (n_items,)`` outside ``exclude`` (seen items), best first.

    Returns fewer than k ids when fewer than k items are left.
    """
    return _ranked_candidates(scores, k, exclude)[:k]


def threshold_select(
    scores: NDArray[np.floating], tau: float, k: int, exclude: NDArray[np.integer] | None = None
) -> NDArray[np.intp]:
    """Ids of items with score ≥ ``tau`` outside ``exclude``, best first, at most k (possibly none)."""
    if np.isnan(tau):
        raise ValueError("threshold tau is NaN")
    ranked = _ranked_candidates(scores, k, exclude)
    return ranked[np.asarray(scores)[ranked] >= tau][:k]


def mmr_rerank(
    scores: NDArray[np.floating],
    item_vectors: NDArray[np.floating],
    k: int,
    lam: float,
    pool: int | None = None,
    exclude: NDArray[np.integer] | None = None,
) -> NDArray[np.intp]:
    """MMR list of at most k ids from the top ``pool`` non-excluded items (all of them if None).

    ``item_vectors (n_items, dim)`` are embeddings or features; similarity is
    their cosine. ``lam`` ∈ [0, 1] weighs relevance; see the module docstring.
    Ties in the MMR objective go to the item ranked higher by score.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must lie in [0, 1], got {lam}")
    scores = np.asarray(scores)
    vectors = np.asarray(item_vectors, dtype=np.float64)
    if vectors.ndim != 2 or (scores.ndim == 1 and vectors.shape[0] != len(scores)):
        raise ValueError(f"item_vectors must have shape ({len(scores)}, dim), got {vectors.shape}")
    if np.isnan(vectors).any():
        raise ValueError("item_vectors contain NaN")
    if pool is not None and pool < k:
        raise ValueError(f"pool ({pool}) must be at least K ({k})")
    candidates = _ranked_candidates(scores, k, exclude)
    if pool is not None:
        candidates = candidates[:pool]
    if len(candidates) == 0:
        return candidates

    pool_scores = scores[candidates].astype(np.float64)
    spread = pool_scores.max() - pool_scores.min()
    relevance = (pool_scores - pool_scores.min()) / spread if spread > 0 else np.ones(len(candidates))
    v = vectors[candidates]
    norms = np.linalg.norm(v, axis=1)
    if (norms == 0).any():
        raise ValueError(f"item {candidates[norms == 0][0]} has a zero vector; cosine similarity is undefined")
    unit = v / norms[:, None]
    similarity = unit @ unit.T  # (pool, pool)

    chosen: list[int] = []
    max_sim = np.zeros(len(candidates))  # max_{j ∈ S} cos(v_i, v_j); 0 while S is empty
    available = np.ones(len(candidates), dtype=bool)
    for _ in range(min(k, len(candidates))):
        objective = lam * relevance - (1.0 - lam) * max_sim
        objective[~available] = -np.inf
        best = int(np.argmax(objective))  # first maximum = highest-scored among ties
        chosen.append(best)
        available[best] = False
        max_sim = np.maximum(max_sim, similarity[best]) if len(chosen) > 1 else similarity[best].copy()
    return candidates[np.asarray(chosen)]
