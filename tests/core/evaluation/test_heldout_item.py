"""Tests for :mod:`fedrec.core.evaluation.heldout_item`, with hand-worked numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.core.evaluation.heldout_item import hit_ratio_at_k, ndcg_at_k, rank_of_target


@pytest.mark.parametrize(
    ("target", "others", "rank"),
    [
        (0.9, [0.5, 0.1, 0.3], 0.0),  # best of all
        (0.1, [0.5, 0.2, 0.3], 3.0),  # worst of 4
        (0.5, [0.9, 0.5, 0.5, 0.1], 2.0),  # 1 greater + 2 tied / 2 = 2
        (0.5, [0.9, 0.5, 0.1], 1.5),  # 1 greater + 1 tied / 2 = 1.5
        (1.0, [1.0] * 99, 49.5),  # all tied: the mean rank of a random order, 99 / 2
        (0.3, [], 0.0),  # no competitors
    ],
)
def test_rank_of_target_uses_mid_ranks(target: float, others: list[float], rank: float) -> None:
    assert rank_of_target(target, np.asarray(others, dtype=np.float64)) == rank


def test_rank_of_target_accepts_float32() -> None:
    others = np.array([2.0, 1.0, 3.0], dtype=np.float32)
    assert rank_of_target(np.float32(2.0), others) == 1.5  # 1 greater + 1 tied / 2


@pytest.mark.parametrize(
    ("target", "others"),
    [(math.nan, [1.0, 2.0]), (1.0, [0.5, math.nan]), (math.nan, [math.nan])],
)
def test_rank_of_target_rejects_nan(target: float, others: list[float]) -> None:
    with pytest.raises(ValueError, match="NaN"):
        rank_of_target(target, np.asarray(others))


@pytest.mark.parametrize(
    ("rank", "k", "hit"),
    [(0, 10, 1.0), (9, 10, 1.0), (9.5, 10, 1.0), (10, 10, 0.0), (49.5, 10, 0.0), (0, 1, 1.0), (0.5, 1, 1.0), (1, 1, 0.0)],
)
def test_hit_ratio(rank: float, k: int, hit: float) -> None:
    assert hit_ratio_at_k(rank, k) == hit


@pytest.mark.parametrize(
    ("rank", "k", "ndcg"),
    [
        (0, 10, 1.0),  # 1 / log2(2)
        (1, 10, 0.6309297535714575),  # 1 / log2(3)
        (2, 10, 0.5),  # 1 / log2(4)
        (0.5, 10, 0.75647079736603),  # 1 / log2(2.5), a tie between the top two
        (6, 10, 1 / 3),  # 1 / log2(8)
        (9, 10, 0.2890648263178879),  # 1 / log2(11), the last rank inside the top 10
        (10, 10, 0.0),  # outside the top 10
        (25, 10, 0.0),
        (2, 2, 0.0),  # rank 2 is outside the top 2
    ],
)
def test_ndcg(rank: float, k: int, ndcg: float) -> None:
    assert ndcg_at_k(rank, k) == pytest.approx(ndcg, abs=1e-12)
