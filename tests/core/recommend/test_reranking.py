"""Tests for :mod:`fedrec.core.recommend.reranking`, with hand-worked lists."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.core.recommend.reranking import mmr_rerank, threshold_select, top_k

SCORES = np.array([0.2, 0.9, 0.5, 0.7, 0.1])  # order by score: 1, 3, 2, 0, 4


def test_top_k_hand_worked() -> None:
    assert top_k(SCORES, 3).tolist() == [1, 3, 2]


def test_top_k_excludes_seen_items() -> None:
    # seen {1, 2} removed: remaining order 3, 0, 4
    assert top_k(SCORES, 2, exclude=np.array([1, 2])).tolist() == [3, 0]


def test_top_k_larger_than_catalogue_returns_all_left() -> None:
    assert top_k(SCORES, 10, exclude=np.array([4])).tolist() == [1, 3, 2, 0]


def test_top_k_ties_go_to_lower_id() -> None:
    assert top_k(np.array([0.5, 0.9, 0.5, 0.5]), 3).tolist() == [1, 0, 2]
    # a long block of ties (past numpy's small-array insertion sort) keeps id order too
    scores = np.zeros(100)
    scores[50] = 1.0
    assert top_k(scores, 100).tolist() == [50, *range(50), *range(51, 100)]


@pytest.mark.parametrize("select", [lambda s, k: top_k(s, k), lambda s, k: threshold_select(s, 0.0, k)])
def test_selection_rejects_bad_input(select) -> None:
    with pytest.raises(ValueError, match="K must be at least 1"):
        select(SCORES, 0)
    with pytest.raises(ValueError, match="NaN"):
        select(np.array([0.1, math.nan]), 1)
    with pytest.raises(ValueError, match="shape"):
        select(np.ones((2, 2)), 1)


def test_exclude_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"excluded item ids must lie in \[0, 5\)"):
        top_k(SCORES, 2, exclude=np.array([5]))


def test_threshold_select_hand_worked() -> None:
    # scores ≥ 0.5: items 1 (0.9), 3 (0.7), 2 (0.5, equal to τ counts) → best first
    assert threshold_select(SCORES, 0.5, 5).tolist() == [1, 3, 2]
    # at most K
    assert threshold_select(SCORES, 0.5, 2).tolist() == [1, 3]
    # seen item 3 removed
    assert threshold_select(SCORES, 0.5, 5, exclude=np.array([3])).tolist() == [1, 2]
    # nothing passes
    assert threshold_select(SCORES, 0.95, 5).tolist() == []


def test_threshold_select_rejects_nan_tau() -> None:
    with pytest.raises(ValueError, match="tau is NaN"):
        threshold_select(SCORES, math.nan, 2)


# MMR example: scores [0.9, 0.8, 0.5] → rel (min-max over pool) = [1, 0.75, 0]
# v0 = v1 = (1, 0) (cos 1), v2 = (0, 1) (cos 0 with both)
MMR_SCORES = np.array([0.9, 0.8, 0.5])
MMR_VECTORS = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


def test_mmr_hand_worked_diversifies() -> None:
    # λ = 0.5: pick 1 = argmax 0.5·rel = item 0
    # pick 2: item 1: 0.5·0.75 − 0.5·1 = −0.125; item 2: 0.5·0 − 0.5·0 = 0 → item 2
    # pick 3: item 1 only → [0, 2, 1]
    assert mmr_rerank(MMR_SCORES, MMR_VECTORS, 3, lam=0.5).tolist() == [0, 2, 1]


def test_mmr_hand_worked_relevance_wins_at_high_lambda() -> None:
    # λ = 0.8, pick 2: item 1: 0.8·0.75 − 0.2·1 = 0.4; item 2: 0 − 0 = 0 → item 1
    assert mmr_rerank(MMR_SCORES, MMR_VECTORS, 2, lam=0.8).tolist() == [0, 1]


def test_mmr_lambda_zero_first_pick_is_best_then_least_similar() -> None:
    # λ = 0: objective 0 for all on pick 1 → tie → best-scored item 0
    # pick 2: item 1: −1, item 2: 0 → item 2
    assert mmr_rerank(MMR_SCORES, MMR_VECTORS, 2, lam=0.0).tolist() == [0, 2]


def test_mmr_negative_similarity_counts() -> None:
    # v1 = (0, 1) is orthogonal to v0 (cos 0), v2 = (−1, 0) opposite (cos −1). λ = 0.5, rel = [1, 0.75, 0]
    # pick 2: item 1: 0.375 − 0.5·0 = 0.375; item 2: 0 − 0.5·(−1) = 0.5 → item 2
    # (clipping the max similarity at 0 would give item 2 only 0 and pick item 1)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert mmr_rerank(MMR_SCORES, vectors, 2, lam=0.5).tolist() == [0, 2]


def test_mmr_pool_limits_candidates() -> None:
    # pool = 2 keeps items 0 and 1 only; item 2 cannot be picked even at λ = 0
    assert mmr_rerank(MMR_SCORES, MMR_VECTORS, 2, lam=0.0, pool=2).tolist() == [0, 1]


def test_mmr_excludes_seen_items() -> None:
    # item 0 seen: pool [1, 2], rel [1, 0]; λ = 0.5 → [1, 2]
    assert mmr_rerank(MMR_SCORES, MMR_VECTORS, 2, lam=0.5, exclude=np.array([0])).tolist() == [1, 2]


def test_mmr_with_lambda_one_is_top_k() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        scores = rng.normal(size=30)
        scores[:5] = scores[5]  # a block of ties
        vectors = rng.normal(size=(30, 4))
        seen = rng.choice(30, size=6, replace=False)
        expected = top_k(scores, 10, exclude=seen)
        assert mmr_rerank(scores, vectors, 10, lam=1.0, pool=15, exclude=seen).tolist() == expected.tolist()


def test_mmr_equal_scores_give_full_relevance() -> None:
    # all pool scores equal → rel = 1 for every item; λ = 0.5
    # pick 1: tie → item 0; pick 2: item 1: 0.5 − 0.5·1 = 0; item 2: 0.5 − 0 = 0.5 → item 2
    assert mmr_rerank(np.array([0.3, 0.3, 0.3]), MMR_VECTORS, 2, lam=0.5).tolist() == [0, 2]


def test_mmr_k_larger_than_pool_of_items() -> None:
    assert mmr_rerank(MMR_SCORES, MMR_VECTORS, 5, lam=0.5).tolist() == [0, 2, 1]
    assert mmr_rerank(MMR_SCORES, MMR_VECTORS, 2, lam=0.5, exclude=np.arange(3)).tolist() == []


@pytest.mark.parametrize("lam", [-0.1, 1.1, math.nan])
def test_mmr_rejects_lambda_outside_unit_interval(lam: float) -> None:
    with pytest.raises(ValueError, match=r"lambda must lie in \[0, 1\]"):
        mmr_rerank(MMR_SCORES, MMR_VECTORS, 2, lam=lam)


def test_mmr_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="item_vectors must have shape"):
        mmr_rerank(MMR_SCORES, MMR_VECTORS[:2], 2, lam=0.5)
    with pytest.raises(ValueError, match=r"pool \(1\) must be at least K \(2\)"):
        mmr_rerank(MMR_SCORES, MMR_VECTORS, 2, lam=0.5, pool=1)
    with pytest.raises(ValueError, match="zero vector"):
        mmr_rerank(MMR_SCORES, np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]), 2, lam=0.5)
    with pytest.raises(ValueError, match="NaN"):
        mmr_rerank(np.array([0.1, math.nan, 0.3]), MMR_VECTORS, 2, lam=0.5)
    with pytest.raises(ValueError, match="K must be at least 1"):
        mmr_rerank(MMR_SCORES, MMR_VECTORS, 0, lam=0.5)
