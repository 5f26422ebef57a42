"""EASE: a 2-item example by hand and the closed form's optimality conditions."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.core.baselines.ease import EASE, ease_weights
from fedrec.core.baselines.scorer import training_matrix
from fedrec.core.data.split import NO_ITEM, LeaveOneOutSplit


def _split(train: list[list[int]], n_items: int) -> LeaveOneOutSplit:
    n_users = len(train)
    return LeaveOneOutSplit(
        n_users=n_users,
        n_items=n_items,
        train_indptr=np.concatenate([[0], np.cumsum([len(t) for t in train])]).astype(np.int64),
        train_items=np.array([i for t in train for i in t], dtype=np.int64),
        validation_item=np.full(n_users, NO_ITEM),
        test_item=np.full(n_users, NO_ITEM),
        seed=0,
    )


def test_two_items_by_hand() -> None:
    # users {0, 1}, {0}, {0}: G = XᵀX = [[3, 1], [1, 1]], λ = 1.
    # With two items, B[0, 1] = c / (a + λ) = 1/4 and B[1, 0] = c / (b + λ) = 1/2
    # (a ridge regression of one column on the other).
    split = _split([[0, 1], [0], [0]], n_items=2)
    model = EASE(lam=1.0).fit(split)
    np.testing.assert_allclose(model.B, [[0, 0.25], [0.5, 0]], rtol=1e-6)
    # s(u, ·) = X[u] B: user 0 → [1/2, 1/4], user 1 → [0, 1/4]
    np.testing.assert_allclose(model.score_users(np.array([0, 1])), [[0.5, 0.25], [0, 0.25]], rtol=1e-6)


def test_closed_form_meets_the_constrained_optimality_conditions() -> None:
    rng = np.random.default_rng(3)
    X = (rng.random((30, 8)) < 0.3).astype(np.float64)
    gram = X.T @ X
    lam = 2.5
    B = ease_weights(gram, lam)
    # diag(B) = 0, and the gradient (G + λI)B − G of ½‖X − XB‖² + ½λ‖B‖² is zero off the diagonal
    np.testing.assert_allclose(np.diag(B), 0)
    gradient = (gram + lam * np.eye(8)) @ B - gram
    np.testing.assert_allclose(gradient - np.diag(np.diag(gradient)), 0, atol=1e-10)


def test_fit_uses_the_binary_training_matrix() -> None:
    split = _split([[0, 1, 2], [1, 2], [0, 3]], n_items=4)
    model = EASE(lam=3.0).fit(split)
    X = training_matrix(split).toarray()
    np.testing.assert_allclose(model.B, ease_weights(X.T @ X, 3.0), rtol=1e-6)


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan")])
def test_non_positive_lambda_is_refused(lam: float) -> None:
    with pytest.raises(ValueError, match="lambda must be > 0"):
        EASE(lam=lam)


def test_gram_must_be_square() -> None:
    with pytest.raises(ValueError, match="square"):
        ease_weights(np.ones((2, 3)), 1.0)
