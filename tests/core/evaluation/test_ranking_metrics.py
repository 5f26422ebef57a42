"""Tests for :mod:`fedrec.core.evaluation.lists`, with hand-worked numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.core.evaluation.heldout_item import ndcg_at_k
from fedrec.core.evaluation.lists import (
    catalog_coverage,
    f1_at_k,
    intra_list_diversity,
    list_hit_ratio_at_k,
    list_ndcg_at_k,
    list_recall_at_k,
    mae,
    mrr_at_k,
    novelty,
    precision_at_k,
    rmse,
)

# Items 20 and 40 sit at 1-based ranks 2 and 4 of a 5-item list; item 99 is relevant
# but not recommended, so |R| = 3.
RANKED = np.array([10, 20, 30, 40, 50])
RELEVANT = np.array([20, 40, 99])

LOG2_3 = math.log2(3)  # 1.58496
LOG2_5 = math.log2(5)  # 2.32193


def test_list_metrics_at_5_hand_worked() -> None:
    # hits = 2 (ranks 2 and 4)
    # precision@5 = 2/5; recall@5 = 2/3; F1 = 2·(2/5)(2/3)/(2/5 + 2/3) = (8/15)/(16/15) = 1/2
    # MRR@5 = 1/2 (first hit at rank 2); HR@5 = 1
    # DCG = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068 = 1.06161
    # IDCG (3 relevant, K=5 → 3 ideal slots) = 1 + 1/log2(3) + 1/log2(4) = 2.13093
    # NDCG@5 = 1.06161 / 2.13093 = 0.49819
    assert precision_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 5)
    assert list_recall_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 3)
    assert f1_at_k(RANKED, RELEVANT, 5) == pytest.approx(1 / 2)
    assert mrr_at_k(RANKED, RELEVANT, 5) == pytest.approx(1 / 2)
    assert list_hit_ratio_at_k(RANKED, RELEVANT, 5) == 1.0
    assert list_ndcg_at_k(RANKED, RELEVANT, 5) == pytest.approx(
        (1 / LOG2_3 + 1 / LOG2_5) / (1 + 1 / LOG2_3 + 0.5)
    )
    assert list_ndcg_at_k(RANKED, RELEVANT, 5) == pytest.approx(0.49819, abs=1e-5)


def test_list_metrics_at_3_hand_worked() -> None:
    # top-3 = [10, 20, 30]: one hit (20, rank 2)
    # precision@3 = 1/3; recall@3 = 1/3; F1 = 1/3; MRR = 1/2
    # NDCG@3 = (1/log2 3) / (1 + 1/log2 3 + 1/2) = 0.63093 / 2.13093 = 0.29608
    assert precision_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 3)
    assert list_recall_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 3)
    assert f1_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 3)
    assert mrr_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 2)
    assert list_ndcg_at_k(RANKED, RELEVANT, 3) == pytest.approx(0.29608, abs=1e-5)


def test_list_metrics_at_1_miss_everything() -> None:
    # top-1 = [10], not relevant
    for metric in (precision_at_k, list_recall_at_k, f1_at_k, mrr_at_k, list_hit_ratio_at_k, list_ndcg_at_k):
        assert metric(RANKED, RELEVANT, 1) == 0.0


def test_no_relevant_item_in_list() -> None:
    ranked = np.array([1, 2, 3])
    relevant = np.array([7, 8])
    assert precision_at_k(ranked, relevant, 3) == 0.0
    assert list_recall_at_k(ranked, relevant, 3) == 0.0
    assert f1_at_k(ranked, relevant, 3) == 0.0  # P = R = 0, not 0/0
    assert mrr_at_k(ranked, relevant, 3) == 0.0
    assert list_hit_ratio_at_k(ranked, relevant, 3) == 0.0
    assert list_ndcg_at_k(ranked, relevant, 3) == 0.0


def test_k_larger_than_list() -> None:
    # list [5, 6], relevant {6}, K = 4: hit at rank 2
    # precision@4 = 1/4 (missing slots count as misses); recall = 1; MRR = 1/2
    # F1 = 2·(1/4)(1)/(5/4) = 2/5
    # NDCG = (1/log2 3) / 1 = 0.63093 (IDCG: min(|R|=1, K=4) = 1 slot)
    ranked = np.array([5, 6])
    relevant = np.array([6])
    assert precision_at_k(ranked, relevant, 4) == pytest.approx(1 / 4)
    assert list_recall_at_k(ranked, relevant, 4) == 1.0
    assert f1_at_k(ranked, relevant, 4) == pytest.approx(2 / 5)
    assert mrr_at_k(ranked, relevant, 4) == pytest.approx(1 / 2)
    assert list_ndcg_at_k(ranked, relevant, 4) == pytest.approx(1 / LOG2_3)


def test_perfect_list_has_ndcg_one() -> None:
    # relevant {3, 1} at ranks 1 and 2: DCG = IDCG → 1
    assert list_ndcg_at_k(np.array([3, 1, 9]), np.array([1, 3]), 3) == pytest.approx(1.0)
    assert mrr_at_k(np.array([3, 1, 9]), np.array([1, 3]), 3) == 1.0


def test_single_relevant_ndcg_matches_metrics_module() -> None:
    # reference: with one relevant item, list NDCG equals metrics.ndcg_at_k of its rank
    ranked = np.arange(10)
    for position in range(10):
        assert list_ndcg_at_k(ranked, np.array([position]), 6) == pytest.approx(ndcg_at_k(float(position), 6))


def test_duplicate_relevant_ids_count_once() -> None:
    # relevant [20, 20] is the set {20}: recall@5 = 1/1
    assert list_recall_at_k(RANKED, np.array([20, 20]), 5) == 1.0


@pytest.mark.parametrize(
    "metric", [precision_at_k, list_recall_at_k, f1_at_k, mrr_at_k, list_hit_ratio_at_k, list_ndcg_at_k]
)
def test_list_metrics_reject_bad_input(metric) -> None:
    with pytest.raises(ValueError, match="K must be at least 1"):
        metric(RANKED, RELEVANT, 0)
    with pytest.raises(ValueError, match="twice"):
        metric(np.array([1, 2, 1]), RELEVANT, 2)
    with pytest.raises(ValueError, match="1-D"):
        metric(np.array([[1, 2]]), RELEVANT, 2)


@pytest.mark.parametrize("metric", [list_recall_at_k, f1_at_k, list_ndcg_at_k])
def test_metrics_needing_relevant_items_reject_empty_set(metric) -> None:
    with pytest.raises(ValueError, match="without relevant items"):
        metric(RANKED, np.array([], dtype=int), 3)


# --------------------------------------------------------------------------- catalogue


def test_catalog_coverage_hand_worked() -> None:
    # lists {0,1} ∪ {1,2} = {0,1,2}; 3 of 5 items → 0.6
    assert catalog_coverage([np.array([0, 1]), np.array([1, 2])], 5) == pytest.approx(3 / 5)


def test_catalog_coverage_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="catalogue is empty"):
        catalog_coverage([np.array([0])], 0)
    with pytest.raises(ValueError, match=r"list 1: item ids must lie in \[0, 3\)"):
        catalog_coverage([np.array([0]), np.array([3])], 3)
    with pytest.raises(ValueError, match="no top-K lists"):
        catalog_coverage([], 3)


VECTORS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])


def test_intra_list_diversity_hand_worked() -> None:
    # cos(v0, v1) = 0; cos(v0, v2) = cos(v1, v2) = 1/√2 = 0.70711
    # list [0, 1]:    mean(1 − 0) = 1
    # list [0, 1, 2]: (1 + 0.29289 + 0.29289) / 3 = 0.52860
    # mean over users = (1 + 0.52860) / 2 = 0.76430
    lists = [np.array([0, 1]), np.array([0, 1, 2])]
    expected = (1 + (1 + 2 * (1 - 1 / math.sqrt(2))) / 3) / 2
    assert intra_list_diversity(lists, VECTORS) == pytest.approx(expected)
    assert intra_list_diversity(lists, VECTORS) == pytest.approx(0.76430, abs=1e-5)


def test_intra_list_diversity_is_zero_for_parallel_items() -> None:
    # v3 = 2·v0: cosine 1, diversity 0 (scale does not matter)
    assert intra_list_diversity([np.array([0, 3])], VECTORS) == pytest.approx(0.0)


def test_intra_list_diversity_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2 distinct items"):
        intra_list_diversity([np.array([0])], VECTORS)
    with pytest.raises(ValueError, match="zero vector"):
        intra_list_diversity([np.array([0, 1])], np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        intra_list_diversity([np.array([0, 1])], np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="NaN"):
        intra_list_diversity([np.array([0, 1])], np.array([[1.0, 0.0], [math.nan, 1.0]]))
    with pytest.raises(ValueError, match="must lie in"):
        intra_list_diversity([np.array([0, 9])], VECTORS)


def test_novelty_hand_worked() -> None:
    # n_users = 4, counts [4, 2, 1, 0] → pop = [1, 1/2, 1/4, unseen → 1/4 (counted once)]
    # −log2 pop = [0, 1, 2, 2]; slots [0, 1] + [2, 3] → mean (0 + 1 + 2 + 2) / 4 = 1.25
    counts = np.array([4, 2, 1, 0])
    assert novelty([np.array([0, 1]), np.array([2, 3])], counts, 4) == pytest.approx(1.25)
    # pooled over slots: lists [0] and [1, 2, 3] → (0 + 1 + 2 + 2) / 4, still 1.25, not mean of per-user means
    assert novelty([np.array([0]), np.array([1, 2, 3])], counts, 4) == pytest.approx(1.25)


def test_novelty_rejects_bad_input() -> None:
    counts = np.array([4, 2, 1, 0])
    with pytest.raises(ValueError, match="n_users must be at least 1"):
        novelty([np.array([0])], counts, 0)
    with pytest.raises(ValueError, match="item_counts must lie in"):
        novelty([np.array([0])], np.array([5, 1]), 4)
    with pytest.raises(ValueError, match="catalogue is empty"):
        novelty([np.array([], dtype=int)], np.array([], dtype=int), 4)
    with pytest.raises(ValueError, match="all top-K lists are empty"):
        novelty([np.array([], dtype=int)], counts, 4)


# --------------------------------------------------------------------------- ratings


def test_rmse_and_mae_hand_worked() -> None:
    # errors ŷ − y = [1, 0, −2]: MAE = 3/3 = 1; RMSE = sqrt((1 + 0 + 4) / 3) = sqrt(5/3) = 1.29099
    predicted = np.array([3.0, 4.0, 5.0])
    actual = np.array([2.0, 4.0, 7.0])
    assert mae(predicted, actual) == pytest.approx(1.0)
    assert rmse(predicted, actual) == pytest.approx(math.sqrt(5 / 3))


def test_rmse_and_mae_zero_for_perfect_predictions() -> None:
    assert rmse(np.array([1.5, 2.0]), np.array([1.5, 2.0])) == 0.0
    assert mae(np.array([1.5, 2.0]), np.array([1.5, 2.0])) == 0.0


@pytest.mark.parametrize("metric", [rmse, mae])
def test_rating_errors_reject_bad_input(metric) -> None:
    with pytest.raises(ValueError, match="does not match"):
        metric(np.array([1.0, 2.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="no ratings"):
        metric(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        metric(np.array([1.0, math.nan]), np.array([1.0, 2.0]))
