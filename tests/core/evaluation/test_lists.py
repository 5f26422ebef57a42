"""Tests for :mod:`fedrec.core.evaluation.lists`, with hand-worked numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.core.evaluation import heldout_item
from fedrec.core.evaluation.lists import f1_at_k, hit_ratio_at_k, mrr_at_k, ndcg_at_k, precision_at_k, recall_at_k

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
    assert recall_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 3)
    assert f1_at_k(RANKED, RELEVANT, 5) == pytest.approx(1 / 2)
    assert mrr_at_k(RANKED, RELEVANT, 5) == pytest.approx(1 / 2)
    assert hit_ratio_at_k(RANKED, RELEVANT, 5) == 1.0
    assert ndcg_at_k(RANKED, RELEVANT, 5) == pytest.approx(
        (1 / LOG2_3 + 1 / LOG2_5) / (1 + 1 / LOG2_3 + 0.5)
    )
    assert ndcg_at_k(RANKED, RELEVANT, 5) == pytest.approx(0.49819, abs=1e-5)


def test_list_metrics_at_3_hand_worked() -> None:
    # top-3 = [10, 20, 30]: one hit (20, rank 2)
    # precision@3 = 1/3; recall@3 = 1/3; F1 = 1/3; MRR = 1/2
    # NDCG@3 = (1/log2 3) / (1 + 1/log2 3 + 1/2) = 0.63093 / 2.13093 = 0.29608
    assert precision_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 3)
    assert f1_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 3)
    assert mrr_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 2)
    assert ndcg_at_k(RANKED, RELEVANT, 3) == pytest.approx(0.29608, abs=1e-5)


def test_list_metrics_at_1_miss_everything() -> None:
    # top-1 = [10], not relevant
    for metric in (precision_at_k, recall_at_k, f1_at_k, mrr_at_k, hit_ratio_at_k, ndcg_at_k):
        assert metric(RANKED, RELEVANT, 1) == 0.0


def test_no_relevant_item_in_list() -> None:
    ranked = np.array([1, 2, 3])
    relevant = np.array([7, 8])
    assert precision_at_k(ranked, relevant, 3) == 0.0
    assert recall_at_k(ranked, relevant, 3) == 0.0
    assert f1_at_k(ranked, relevant, 3) == 0.0  # P = R = 0, not 0/0
    assert mrr_at_k(ranked, relevant, 3) == 0.0
    assert hit_ratio_at_k(ranked, relevant, 3) == 0.0
    assert ndcg_at_k(ranked, relevant, 3) == 0.0


def test_k_larger_than_list() -> None:
    # list [5, 6], relevant {6}, K = 4: hit at rank 2
    # precision@4 = 1/4 (missing slots count as misses); recall = 1; MRR = 1/2
    # F1 = 2·(1/4)(1)/(5/4) = 2/5
    # NDCG = (1/log2 3) / 1 = 0.63093 (IDCG: min(|R|=1, K=4) = 1 slot)
    ranked = np.array([5, 6])
    relevant = np.array([6])
    assert precision_at_k(ranked, relevant, 4) == pytest.approx(1 / 4)
    assert recall_at_k(ranked, relevant, 4) == 1.0
    assert f1_at_k(ranked, relevant, 4) == pytest.approx(2 / 5)
    assert mrr_at_k(ranked, relevant, 4) == pytest.approx(1 / 2)
    assert ndcg_at_k(ranked, relevant, 4) == pytest.approx(1 / LOG2_3)


def test_perfect_list_has_ndcg_one() -> None:
    # relevant {3, 1} at ranks 1 and 2: DCG = IDCG → 1
    assert ndcg_at_k(np.array([3, 1, 9]), np.array([1, 3]), 3) == pytest.approx(1.0)
    assert mrr_at_k(np.array([3, 1, 9]), np.array([1, 3]), 3) == 1.0


def test_single_relevant_ndcg_matches_metrics_module() -> None:
    # reference: with one relevant item, list NDCG equals heldout_item.ndcg_at_k of its rank
    ranked = np.arange(10)
    for position in range(10):
        assert ndcg_at_k(ranked, np.array([position]), 6) == pytest.approx(heldout_item.ndcg_at_k(float(position), 6))


def test_duplicate_relevant_ids_count_once() -> None:
    # relevant [20, 20] is the set {20}: recall@5 = 1/1
    assert recall_at_k(RANKED, np.array([20, 20]), 5) == 1.0


@pytest.mark.parametrize(
    "metric", [precision_at_k, recall_at_k, f1_at_k, mrr_at_k, hit_ratio_at_k, ndcg_at_k]
)
def test_list_metrics_reject_bad_input(metric) -> None:
    with pytest.raises(ValueError, match="K must be at least 1"):
        metric(RANKED, RELEVANT, 0)
    with pytest.raises(ValueError, match="twice"):
        metric(np.array([1, 2, 1]), RELEVANT, 2)
    with pytest.raises(ValueError, match="1-D"):
        metric(np.array([[1, 2]]), RELEVANT, 2)


@pytest.mark.parametrize("metric", [recall_at_k, f1_at_k, ndcg_at_k])
def test_metrics_needing_relevant_items_reject_empty_set(metric) -> None:
    with pytest.raises(ValueError, match="without relevant items"):
        metric(RANKED, np.array([], dtype=int), 3)


@pytest.mark.parametrize(
    ("top_k", "relevant", "recall"),
    [
        ([3, 1, 4], [1, 5], 0.5),  # 1 of 2 relevant items retrieved
        ([3, 1, 4], [4, 3, 1], 1.0),
        ([3, 1, 4], [7], 0.0),
        ([2, 9, 8, 7], [9, 8, 6, 5], 0.5),
    ],
)
def test_recall_of_whole_list(top_k: list[int], relevant: list[int], recall: float) -> None:
    assert recall_at_k(np.asarray(top_k), np.asarray(relevant), len(top_k)) == recall
