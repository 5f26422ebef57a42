"""Catalogue-level (beyond-accuracy) metrics over all users' top-K lists ``L_u``.

* coverage = |∪_u L_u| / n_items.
* intra-list diversity = mean_u [ mean_{i<j in L_u} (1 − cos(v_i, v_j)) ].
* novelty = mean over every recommended slot of −log2(pop(i)), pop(i) = count(i) / n_users.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


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



def coverage(top_k_lists: Sequence[NDArray[np.integer]], n_items: int) -> float:
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
