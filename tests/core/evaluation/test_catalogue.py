"""Tests for :mod:`fedrec.core.evaluation.catalogue`, with hand-worked numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.core.evaluation.catalogue import coverage, intra_list_diversity, novelty


def test_coverage_hand_worked() -> None:
    # lists {0,1} ∪ {1,2} = {0,1,2}; 3 of 5 items → 0.6
    assert coverage([np.array([0, 1]), np.array([1, 2])], 5) == pytest.approx(3 / 5)


def test_coverage_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="catalogue is empty"):
        coverage([np.array([0])], 0)
    with pytest.raises(ValueError, match=r"list 1: item ids must lie in \[0, 3\)"):
        coverage([np.array([0]), np.array([3])], 3)
    with pytest.raises(ValueError, match="no top-K lists"):
        coverage([], 3)


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
