"""EASE: a closed-form item-item linear model (Steck, "Embarrassingly Shallow
Autoencoders for Sparse Data", WWW 2019).

With X the binary ``(n_users, n_items)`` training matrix and λ > 0,

    B = argmin_B ‖X − XB‖²_F + λ‖B‖²_F  subject to diag(B) = 0

has the closed form P = (XᵀX + λI)⁻¹, B = I − P · diagMat(1 / diag(P)), i.e.
B[i, j] = −P[i, j] / P[j, j] for i ≠ j and B[j, j] = 0. Scores are s(u, ·) = X[u] B.
Fitting inverts an ``(n_items, n_items)`` matrix: O(n_items³) time, O(n_items²) memory.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from fedrec.core.baselines.scorer import check_users, training_matrix
from fedrec.core.data.split import LeaveOneOutSplit

MAX_EASE_ITEMS = 20_000  # a dense 20k × 20k float64 matrix is 3.2 GB


def ease_weights(gram: NDArray[np.floating], lam: float) -> NDArray[np.float64]:
    """B = I − P·diagMat(1/diag(P)) with P = (G + λI)⁻¹, for the Gram matrix ``G = XᵀX (n, n)``."""
    if not lam > 0:
        raise ValueError(f"the L2 weight lambda must be > 0, got {lam}")
    gram = np.asarray(gram, dtype=np.float64)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"the Gram matrix must be square (n_items, n_items), got {gram.shape}")
    P = np.linalg.inv(gram + lam * np.eye(len(gram)))
    B = -P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return B


class EASE:
    """s(u, ·) = X[u] B with B the EASE weights for L2 weight ``lam`` (λ)."""

    def __init__(self, lam: float = 250.0) -> None:
        if not lam > 0:
            raise ValueError(f"the L2 weight lambda must be > 0, got {lam}")
        self.lam = lam
        self.X: sp.csr_matrix | None = None
        self.B: NDArray[np.float32] | None = None

    def fit(self, split: LeaveOneOutSplit) -> EASE:
        if split.n_items > MAX_EASE_ITEMS:
            raise ValueError(
                f"EASE inverts a dense n_items × n_items matrix; {split.n_items} items exceed {MAX_EASE_ITEMS}"
            )
        self.X = training_matrix(split)
        gram = (self.X.T @ self.X).toarray()
        self.B = ease_weights(gram, self.lam).astype(np.float32)
        return self

    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        if self.X is None or self.B is None:
            raise RuntimeError("EASE is not fitted: call fit(split) first")
        users = check_users(users, self.X.shape[0])
        return np.asarray(self.X[users] @ self.B, dtype=np.float32)
