"""Neighbourhood baselines on the binary training matrix: item-kNN and user-kNN.

X is the binary ``(n_users, n_items)`` training matrix
(:func:`fedrec.core.baselines.scorer.training_matrix`). For two binary vectors a, b
(columns of X for items, rows for users) the shrunk cosine similarity is

    sim(a, b) = a·b / (‖a‖·‖b‖ + shrink),

with ``shrink ≥ 0`` damping similarities built on few co-occurrences
(‖a‖² is the number of ones of a). A vector's similarity to itself is not used,
and a zero vector has similarity 0 to everything.

* **Item-kNN** (Sarwar et al. 2001; Deshpande & Karypis 2004): for every item j,
  N_k(j) holds the k items i ≠ j with the highest positive sim(x_i, x_j) (ties
  towards the lower id). The score of user u for item j sums the similarities of
  j's neighbours that u trained on:

      s(u, j) = Σ_{i ∈ N_k(j), X[u, i] = 1} sim(x_i, x_j).

* **User-kNN** (Herlocker et al. 1999, binary form): for every user u, N_k(u) holds
  the k users v ≠ u with the highest positive sim(x_u, x_v); the score of u for
  item i sums the similarities of u's neighbours who trained on i:

      s(u, i) = Σ_{v ∈ N_k(u), X[v, i] = 1} sim(x_u, x_v).

Similarities are computed in blocks of rows with scipy.sparse, and only the k
kept neighbours per row are stored (a sparse ``(n, n)`` matrix W), so fitting is
O(n² · chunk) in time but O(n·k) in stored memory.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from fedrec.core.baselines.scorer import check_users, training_matrix
from fedrec.core.data.split import LeaveOneOutSplit

SIMILARITY_BLOCK_ROWS = 512


def _check_knn_args(k: int, shrink: float) -> None:
    if k < 1:
        raise ValueError(f"the number of neighbours k must be at least 1, got {k}")
    if not shrink >= 0:
        raise ValueError(f"shrink must be ≥ 0, got {shrink}")


def shrunk_cosine_neighbours(vectors: sp.csr_matrix, k: int, shrink: float) -> sp.csr_matrix:
    """``(n, n)`` CSR W with W[a, b] = sim(v_a, v_b) for the k nearest b of each row a, else 0.

    ``vectors (n, d)`` are binary rows; sim is the shrunk cosine of the module
    docstring. Only positive similarities are kept, the diagonal never is, and
    ties at the k-th place go to the lower column index.
    """
    _check_knn_args(k, shrink)
    vectors = sp.csr_matrix(vectors, dtype=np.float64)
    n = vectors.shape[0]
    norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel())
    keep = min(k, max(n - 1, 0))
    rows, cols, vals = [], [], []
    for start in range(0, n, SIMILARITY_BLOCK_ROWS):
        stop = min(start + SIMILARITY_BLOCK_ROWS, n)
        dots = (vectors[start:stop] @ vectors.T).toarray()
        denominator = norms[start:stop, None] * norms[None, :] + shrink
        sims = np.divide(dots, denominator, out=np.zeros_like(dots), where=denominator > 0)
        sims[np.arange(stop - start), np.arange(start, stop)] = 0.0  # never one's own neighbour
        if keep == 0:
            continue
        nearest = np.argsort(-sims, axis=1, kind="stable")[:, :keep]
        values = np.take_along_axis(sims, nearest, axis=1)
        positive = values > 0
        rows.append(np.broadcast_to(np.arange(start, stop)[:, None], nearest.shape)[positive])
        cols.append(nearest[positive])
        vals.append(values[positive])
    if not rows:
        return sp.csr_matrix((n, n))
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )


class ItemKNN:
    """Item-kNN: s(u, j) = Σ_{i ∈ N_k(j) ∩ items(u)} sim(x_i, x_j), i.e. scores = X Wᵀ.

    ``W (n_items, n_items)`` row j holds the similarities of j's k neighbours.
    """

    def __init__(self, k: int = 50, shrink: float = 10.0) -> None:
        _check_knn_args(k, shrink)
        self.k = k
        self.shrink = shrink
        self.X: sp.csr_matrix | None = None
        self.neighbours: sp.csr_matrix | None = None

    def fit(self, split: LeaveOneOutSplit) -> ItemKNN:
        self.X = training_matrix(split)
        self.neighbours = shrunk_cosine_neighbours(self.X.T.tocsr(), self.k, self.shrink)
        return self

    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        if self.X is None or self.neighbours is None:
            raise RuntimeError("ItemKNN is not fitted: call fit(split) first")
        users = check_users(users, self.X.shape[0])
        return (self.X[users] @ self.neighbours.T).toarray().astype(np.float32)


class UserKNN:
    """User-kNN: s(u, i) = Σ_{v ∈ N_k(u), X[v, i] = 1} sim(x_u, x_v), i.e. scores = W X.

    ``W (n_users, n_users)`` row u holds the similarities of u's k neighbours.
    """

    def __init__(self, k: int = 50, shrink: float = 10.0) -> None:
        _check_knn_args(k, shrink)
        self.k = k
        self.shrink = shrink
        self.X: sp.csr_matrix | None = None
        self.neighbours: sp.csr_matrix | None = None

    def fit(self, split: LeaveOneOutSplit) -> UserKNN:
        self.X = training_matrix(split)
        self.neighbours = shrunk_cosine_neighbours(self.X, self.k, self.shrink)
        return self

    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        if self.X is None or self.neighbours is None:
            raise RuntimeError("UserKNN is not fitted: call fit(split) first")
        users = check_users(users, self.X.shape[0])
        return (self.neighbours[users] @ self.X).toarray().astype(np.float32)
