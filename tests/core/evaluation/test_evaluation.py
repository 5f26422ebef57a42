"""Tests for :mod:`fedrec.core.evaluation.protocols` on a hand-built user with 8 items."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.core.data.split import NO_ITEM, UserData
from fedrec.core.evaluation.protocols import evaluate_user, mean_metrics, metric_keys

# item:           0    1    2    3    4    5    6    7
# role:         train train val test neg  neg  neg  (unsampled)
SCORES = np.array([9.0, 8.0, 7.0, 5.0, 6.0, 1.0, 0.0, 5.5], dtype=np.float32)


@pytest.fixture()
def user() -> UserData:
    return UserData(
        user=0,
        n_items=8,
        train_items=np.array([0, 1]),
        validation_item=2,
        test_item=3,
        eval_negatives=np.array([4, 5, 6]),
    )


def test_metric_keys() -> None:
    assert metric_keys(10) == ("hr@10", "ndcg@10", "full_hr@10", "full_ndcg@10", "full_recall@10")


def test_k3_sampled_and_full_ranking(user: UserData) -> None:
    metrics = evaluate_user(SCORES, user, k=3)
    # sampled: negatives 4, 5, 6 score 6, 1, 0; only item 4 beats 5.0 → rank 1
    #   HR@3 = 1, NDCG@3 = 1 / log2(3) = 0.63093
    # full: train 0, 1 and validation 2 are removed; candidates 4, 5, 6, 7 score
    #   6, 1, 0, 5.5 → items 4 and 7 beat 5.0 → rank 2
    #   HR@3 = 1, NDCG@3 = 1 / log2(4) = 0.5, top-3 = {4, 7, 3} → recall 1
    assert metrics == pytest.approx(
        {
            "hr@3": 1.0,
            "ndcg@3": 0.6309297535714575,
            "full_hr@3": 1.0,
            "full_ndcg@3": 0.5,
            "full_recall@3": 1.0,
        }
    )


def test_k2_full_ranking_misses(user: UserData) -> None:
    metrics = evaluate_user(SCORES, user, k=2)
    # sampled rank 1 < 2: hit, NDCG 1/log2(3); full rank 2 ≥ 2: miss, top-2 = {4, 7}
    assert metrics == pytest.approx(
        {
            "hr@2": 1.0,
            "ndcg@2": 0.6309297535714575,
            "full_hr@2": 0.0,
            "full_ndcg@2": 0.0,
            "full_recall@2": 0.0,
        }
    )


def test_k1_both_miss(user: UserData) -> None:
    metrics = evaluate_user(SCORES, user, k=1)
    # sampled rank 1 and full rank 2 are both outside the top 1
    assert set(metrics.values()) == {0.0}


def test_training_and_validation_items_do_not_count_in_full_ranking(user: UserData) -> None:
    # if items 0, 1, 2 (scores 9, 8, 7) were not removed the full rank would be 5 → a miss at 3
    assert evaluate_user(SCORES, user, k=3)["full_hr@3"] == 1.0
    # raising an unsampled candidate above the target does count: rank 3 → miss at 3
    scores = SCORES.copy()
    scores[5] = 5.2  # item 5: also a sampled negative → sampled rank 2
    metrics = evaluate_user(scores, user, k=3)
    assert metrics["full_hr@3"] == 0.0
    assert metrics["hr@3"] == 1.0
    assert metrics["ndcg@3"] == pytest.approx(0.5)  # 1 / log2(2 + 2)


def test_user_without_validation_excludes_only_train(user: UserData) -> None:
    no_val = UserData(0, 8, np.array([0, 1]), NO_ITEM, 3, np.array([4, 5, 6]))
    # item 2 (7.0) is now a candidate: candidates 2, 4, 5, 6, 7 → 3 beat 5.0 → rank 3
    metrics = evaluate_user(SCORES, no_val, k=3)
    assert metrics["full_hr@3"] == 0.0
    assert evaluate_user(SCORES, no_val, k=4)["full_ndcg@4"] == pytest.approx(1 / np.log2(5))


def test_recall_equals_hit_ratio_without_ties(user: UserData) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = rng.permutation(8).astype(np.float32)
        for k in (1, 2, 3, 5, 8):
            metrics = evaluate_user(scores, user, k)
            assert metrics[f"full_recall@{k}"] == metrics[f"full_hr@{k}"]


def test_recall_equals_hit_ratio_with_ties() -> None:
    scores = np.zeros(8, dtype=np.float32)  # a model that scores everything the same
    mismatches = []
    for test_item in range(2, 8):
        user = UserData(0, 8, np.array([0, 1]), NO_ITEM, test_item, np.array([], dtype=np.int64))
        metrics = evaluate_user(scores, user, k=2)
        # 6 candidates (2..7) all tied: mid-rank 5 / 2 = 2.5 ≥ 2 → full_hr@2 = 0
        assert metrics["full_hr@2"] == 0.0
        if metrics["full_recall@2"] != metrics["full_hr@2"]:
            mismatches.append(test_item)
    assert mismatches == []


def test_rejects_user_without_test_item() -> None:
    user = UserData(0, 8, np.array([0]), NO_ITEM, NO_ITEM, np.array([1, 2]))
    with pytest.raises(ValueError, match="no test item"):
        evaluate_user(SCORES, user, k=3)


def test_rejects_scores_of_the_wrong_shape(user: UserData) -> None:
    with pytest.raises(ValueError, match="shape"):
        evaluate_user(SCORES[:7], user, k=3)
    with pytest.raises(ValueError, match="shape"):
        evaluate_user(SCORES[None, :], user, k=3)


def test_nan_scores_raise(user: UserData) -> None:
    scores = SCORES.copy()
    scores[6] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_user(scores, user, k=3)


def test_mean_metrics() -> None:
    rows = [{"hr@2": 1.0, "ndcg@2": 1.0}, {"hr@2": 0.0, "ndcg@2": 0.5}, {"hr@2": 1.0, "ndcg@2": 0.0}]
    # (1 + 0 + 1) / 3 and (1 + 0.5 + 0) / 3
    assert mean_metrics(rows) == pytest.approx({"hr@2": 2 / 3, "ndcg@2": 0.5})
    assert mean_metrics([]) == {}
