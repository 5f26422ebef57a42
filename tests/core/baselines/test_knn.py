"""Item-kNN and user-kNN against similarities and scores worked out by hand.

The training matrix X (4 users × 5 items) is

    user 0: items 0, 1, 2
    user 1: items 0, 1
    user 2: items 1, 3
    user 3: items 2, 3, 4

so the item columns are x0 = {u0, u1}, x1 = {u0, u1, u2}, x2 = {u0, u3},
x3 = {u2, u3}, x4 = {u3} with norms √2, √3, √2, √2, 1. With shrink = 1,
sim(a, b) = a·b / (‖a‖‖b‖ + 1):

    s01 = 2/(√6+1)  s02 = 1/3  s12 = s13 = 1/(√6+1)  s23 = 1/3  s24 = s34 = 1/(√2+1)
    s03 = s04 = s14 = 0

The user rows are u0 = {0,1,2}, u1 = {0,1}, u2 = {1,3}, u3 = {2,3,4} with norms
√3, √2, √2, √3:

    t01 = 2/(√6+1)  t02 = 1/(√6+1)  t03 = 1/(3+1)  t12 = 1/3  t13 = 0  t23 = 1/(√6+1)
"""

from __future__ import annotations

from math import sqrt

import numpy as np
import pytest

from fedrec.core.baselines.knn import ItemKNN, UserKNN, shrunk_cosine_neighbours
from fedrec.core.baselines.scorer import training_matrix
from fedrec.core.data.split import NO_ITEM, LeaveOneOutSplit

S01 = 2 / (sqrt(6) + 1)
S02 = S23 = 1 / 3
S12 = S13 = 1 / (sqrt(6) + 1)
S24 = S34 = 1 / (sqrt(2) + 1)

T01 = 2 / (sqrt(6) + 1)
T02 = T23 = 1 / (sqrt(6) + 1)
T03 = 1 / 4
T12 = 1 / 3


@pytest.fixture()
def split() -> LeaveOneOutSplit:
    return LeaveOneOutSplit(
        n_users=4,
        n_items=5,
        train_indptr=np.array([0, 3, 5, 7, 10]),
        train_items=np.array([0, 1, 2, 0, 1, 1, 3, 2, 3, 4]),
        validation_item=np.full(4, NO_ITEM),
        test_item=np.full(4, NO_ITEM),
        seed=0,
    )


def test_training_matrix_is_binary_user_by_item(split: LeaveOneOutSplit) -> None:
    expected = [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [0, 1, 0, 1, 0], [0, 0, 1, 1, 1]]
    np.testing.assert_array_equal(training_matrix(split).toarray(), expected)


def test_all_item_similarities_by_hand(split: LeaveOneOutSplit) -> None:
    # k = 4 keeps every positive similarity: the full shrunk-cosine matrix, zero diagonal
    W = shrunk_cosine_neighbours(training_matrix(split).T.tocsr(), k=4, shrink=1.0).toarray()
    expected = np.array([
        [0, S01, S02, 0, 0],
        [S01, 0, S12, S13, 0],
        [S02, S12, 0, S23, S24],
        [0, S13, S23, 0, S34],
        [0, 0, S24, S34, 0],
    ])
    np.testing.assert_allclose(W, expected, rtol=1e-12)


def test_shrink_zero_is_plain_cosine(split: LeaveOneOutSplit) -> None:
    W = shrunk_cosine_neighbours(training_matrix(split).T.tocsr(), k=4, shrink=0.0).toarray()
    assert W[0, 1] == pytest.approx(2 / sqrt(6))
    assert W[2, 4] == pytest.approx(1 / sqrt(2))


def test_item_neighbours_keep_the_k_most_similar_ties_to_lower_id(split: LeaveOneOutSplit) -> None:
    W = shrunk_cosine_neighbours(training_matrix(split).T.tocsr(), k=2, shrink=1.0).toarray()
    # N(0) = {1, 2}; N(1) = {0, 2} (s12 = s13, lower id wins); N(2) = {4, 0} (s20 = s23, lower id);
    # N(3) = {4, 2}; N(4) = {2, 3}
    expected = np.array([
        [0, S01, S02, 0, 0],
        [S01, 0, S12, 0, 0],
        [S02, 0, 0, 0, S24],
        [0, 0, S23, 0, S34],
        [0, 0, S24, S34, 0],
    ])
    np.testing.assert_allclose(W, expected, rtol=1e-12)


def test_item_knn_scores_by_hand(split: LeaveOneOutSplit) -> None:
    scores = ItemKNN(k=2, shrink=1.0).fit(split).score_users(np.array([0, 3]))
    # s(u, j) = Σ_{i ∈ N(j), u trained on i} s_ij
    # user 0 (items 0, 1, 2): j=0: s01+s02; j=1: s10+s12; j=2: s20; j=3: s32; j=4: s42
    # user 3 (items 2, 3, 4): j=0: s02; j=1: s12; j=2: s24; j=3: s34+s32; j=4: s42+s43
    expected = [
        [S01 + S02, S01 + S12, S02, S23, S24],
        [S02, S12, S24, S34 + S23, S24 + S34],
    ]
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_user_knn_scores_by_hand(split: LeaveOneOutSplit) -> None:
    scores = UserKNN(k=2, shrink=1.0).fit(split).score_users(np.array([0, 3]))
    # N(u0) = {u1, u2} (t02 > t03); N(u3) = {u2, u0} (t32 > t30)
    # s(u, i) = Σ_{v ∈ N(u), v trained on i} t_uv; u0 {0,1,2}, u1 {0,1}, u2 {1,3}
    expected = [
        [T01, T01 + T02, 0, T02, 0],
        [T03, T23 + T03, T03, T23, 0],
    ]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_user_knn_ties_go_to_the_lower_user_id(split: LeaveOneOutSplit) -> None:
    W = shrunk_cosine_neighbours(training_matrix(split), k=2, shrink=1.0).toarray()
    # N(u2): t21 = 1/3 first, then t20 = t23 = 1/(√6+1) → the lower id, u0
    np.testing.assert_allclose(W[2], [T02, T12, 0, 0], rtol=1e-12)


def test_only_positive_similarities_are_kept(split: LeaveOneOutSplit) -> None:
    # item 4 has only two items with positive similarity; k = 4 must not add zeros as neighbours
    W = shrunk_cosine_neighbours(training_matrix(split).T.tocsr(), k=4, shrink=1.0)
    assert W.getrow(4).nnz == 2


def test_blocked_similarity_equals_one_block(split: LeaveOneOutSplit, monkeypatch: pytest.MonkeyPatch) -> None:
    X = training_matrix(split).T.tocsr()
    whole = shrunk_cosine_neighbours(X, k=3, shrink=0.5).toarray()
    monkeypatch.setattr("fedrec.core.baselines.knn.SIMILARITY_BLOCK_ROWS", 2)
    np.testing.assert_array_equal(shrunk_cosine_neighbours(X, k=3, shrink=0.5).toarray(), whole)


@pytest.mark.parametrize("cls", [ItemKNN, UserKNN])
@pytest.mark.parametrize(("k", "shrink"), [(0, 1.0), (-3, 1.0), (5, -0.1), (5, float("nan"))])
def test_bad_k_or_shrink_is_refused(cls: type, k: int, shrink: float) -> None:
    with pytest.raises(ValueError, match="k must be at least 1|shrink must be"):
        cls(k=k, shrink=shrink)
