"""evaluate_scorer on a hand-made split, and agreement with the existing evaluation paths.

Hand-made split (3 users, 6 items, K = 2; 99 evaluation negatives ≥ every candidate,
so each user's negatives are all items it never interacted with):

    user 0: train 0, 1 · validation 2 · test 3   scores [9, 8, 7, 5, 6, 4]
    user 1: train 0, 3 ·                test 4   scores [0, 1, 1, 3, 0, 2]
    user 2: train 3, 5 (not evaluated)

user 0: candidates 3 (5), 4 (6), 5 (4) → list [4, 3]; the test item 3 has rank 1
        among the negatives {4, 5} and the full candidates {4, 5}: a hit, NDCG 1/log2 3;
        precision 1/2, recall 1, F1 2/3, MRR 1/2.
user 1: candidates 1 (1), 2 (1), 4 (0), 5 (2) → list [5, 1] (1 and 2 tie, lower id);
        the test item 4 scores 0 below 1, 2, 5: rank 3, a miss; all list metrics 0.
coverage: {1, 3, 4, 5} → 4/6.
users per item in training: [2, 1, 0, 2, 0, 1] of n_users = 3, so novelty over the
slots 4, 3, 5, 1 is (log2 3 + log2 1.5 + log2 3 + log2 3) / 4 (count 0 counts as 1).
diversity, default vectors = training columns over users (u0, u1, u2):
        item 1 = (1, 0, 0), 3 = (0, 1, 1), 4 = 0, 5 = (0, 0, 1).
        List [4, 3] loses item 4 (zero vector) and with one item left does not count;
        list [5, 1]: cos = 0 → diversity 1.
"""

from __future__ import annotations

from math import log2, sqrt

import numpy as np
import pytest
import torch

from fedrec.core.baselines.popularity import ItemPop, evaluate_itempop
from fedrec.core.baselines.scorer import RecommenderScorer, evaluate_recommender, evaluate_scorer
from fedrec.core.data.split import NO_ITEM, LeaveOneOutSplit
from fedrec.core.models.registry import build_model
from fedrec.core.training.central import evaluate_model

SCORES = np.array([[9, 8, 7, 5, 6, 4], [0, 1, 1, 3, 0, 2], [0, 0, 0, 0, 0, 0]], dtype=np.float32)


class FixedScorer:
    """Returns rows of a fixed score matrix."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def fit(self, split: LeaveOneOutSplit) -> "FixedScorer":
        return self

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self.scores[users]


@pytest.fixture()
def split() -> LeaveOneOutSplit:
    return LeaveOneOutSplit(
        n_users=3,
        n_items=6,
        train_indptr=np.array([0, 2, 4, 6]),
        train_items=np.array([0, 1, 0, 3, 3, 5]),
        validation_item=np.array([2, NO_ITEM, NO_ITEM]),
        test_item=np.array([3, 4, NO_ITEM]),
        seed=0,
    )


def test_every_metric_by_hand(split: LeaveOneOutSplit) -> None:
    metrics = evaluate_scorer(FixedScorer(SCORES), split, k=2)
    expected = {
        "hr@2": 0.5,
        "ndcg@2": 0.5 / log2(3),
        "full_hr@2": 0.5,
        "full_ndcg@2": 0.5 / log2(3),
        "full_recall@2": 0.5,
        "precision@2": 0.25,
        "recall@2": 0.5,
        "f1@2": 1 / 3,
        "mrr@2": 0.25,
        "coverage@2": 4 / 6,
        "diversity@2": 1.0,
        "novelty@2": (3 * log2(3) + log2(1.5)) / 4,
    }
    assert metrics.keys() == expected.keys()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key


def test_given_item_vectors_and_features(split: LeaveOneOutSplit) -> None:
    vectors = np.array([[1, 0], [1, 0], [0, 1], [1, 1], [1, 0], [0, 1]], dtype=np.float64)
    features = np.eye(6)
    metrics = evaluate_scorer(FixedScorer(SCORES), split, k=2, item_vectors=vectors, diversity_features=features)
    # [4, 3]: 1 − cos((1,0), (1,1)) = 1 − 1/√2; [5, 1]: 1 − cos((0,1), (1,0)) = 1
    assert metrics["diversity@2"] == pytest.approx((2 - 1 / sqrt(2)) / 2)
    # one-hot features: every pair is orthogonal
    assert metrics["feature_diversity@2"] == pytest.approx(1.0)


def test_a_subset_of_users(split: LeaveOneOutSplit) -> None:
    metrics = evaluate_scorer(FixedScorer(SCORES), split, k=2, users=np.array([0]))
    assert metrics["hr@2"] == 1.0 and metrics["mrr@2"] == 0.5 and metrics["coverage@2"] == pytest.approx(2 / 6)
    # list [4, 3] alone: item 4 has no training vector, so no list counts
    assert np.isnan(metrics["diversity@2"])


def test_itempop_agrees_with_evaluate_itempop(small_split: LeaveOneOutSplit) -> None:
    ours = evaluate_scorer(ItemPop().fit(small_split), small_split, k=5)
    reference = evaluate_itempop(small_split, k=5)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value), key


def test_recommender_agrees_with_central_evaluate_model(small_split: LeaveOneOutSplit, one_thread: None) -> None:
    model = build_model("mf", small_split.n_users, small_split.n_items, dim=4, seed=1)
    ours = evaluate_recommender(model, small_split, k=5)
    reference = evaluate_model(model, small_split, 5)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value), key


def test_recommender_of_another_size_is_refused(small_split: LeaveOneOutSplit) -> None:
    model = build_model("mf", small_split.n_users + 1, small_split.n_items, dim=4)
    with pytest.raises(ValueError, match="evaluate a model trained on this split"):
        RecommenderScorer(model).fit(small_split)


@pytest.mark.parametrize("k", [0, -1])
def test_non_positive_k_is_refused(split: LeaveOneOutSplit, k: int) -> None:
    with pytest.raises(ValueError, match="K must be at least 1"):
        evaluate_scorer(FixedScorer(SCORES), split, k=k)


def test_wrong_score_shape_is_refused(split: LeaveOneOutSplit) -> None:
    with pytest.raises(ValueError, match=r"returned shape \(2, 5\), expected"):
        evaluate_scorer(FixedScorer(SCORES[:, :5]), split, k=2)


def test_user_without_test_item_is_refused(split: LeaveOneOutSplit) -> None:
    with pytest.raises(ValueError, match="user 2 has no test item"):
        evaluate_scorer(FixedScorer(SCORES), split, k=2, users=np.array([0, 2]))


@pytest.mark.parametrize("users", [np.array([[0]]), np.array([0.0]), np.array([3])])
def test_bad_user_ids_are_refused(split: LeaveOneOutSplit, users: np.ndarray) -> None:
    with pytest.raises(ValueError, match="users must|user ids must"):
        evaluate_scorer(FixedScorer(SCORES), split, k=2, users=users)


@pytest.mark.parametrize("name", ["item_vectors", "diversity_features"])
def test_vectors_of_the_wrong_shape_are_refused(split: LeaveOneOutSplit, name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must have shape"):
        evaluate_scorer(FixedScorer(SCORES), split, k=2, **{name: np.ones((5, 2))})


def test_recommender_scorer_scores_like_the_model(small_split: LeaveOneOutSplit, one_thread: None) -> None:
    model = build_model("mf", small_split.n_users, small_split.n_items, dim=4, seed=2)
    users = np.array([3, 0, 7])
    with torch.no_grad():
        expected = model.score_items(torch.from_numpy(users), torch.arange(small_split.n_items)).numpy()
    np.testing.assert_allclose(RecommenderScorer(model).fit(small_split).score_users(users), expected, rtol=1e-6)
