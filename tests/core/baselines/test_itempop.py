"""Tests for :mod:`fedrec.core.baselines.popularity` on a hand-made split."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.core.baselines.popularity import evaluate_itempop, item_popularity
from fedrec.core.data.interactions import Interactions
from fedrec.core.data.split import leave_one_out


@pytest.fixture()
def split():
    """Users 0-3 over items 0-5, with timestamps (latest = test, then validation).

    user 0: train 0, 1 · val 2 · test 4
    user 1: train 0, 1 · val 3 · test 5
    user 2: train 0     · val 1 · test 2
    user 3: train 3     ·        test 0
    """
    rows = [
        (0, 0), (0, 1), (0, 2), (0, 4),
        (1, 0), (1, 1), (1, 3), (1, 5),
        (2, 0), (2, 1), (2, 2),
        (3, 3), (3, 0),
    ]
    users, items = zip(*rows)
    return leave_one_out(Interactions.from_raw(users, items, timestamps=range(len(rows))), seed=0)


def test_item_popularity_counts_training_interactions_only(split) -> None:
    # training items: 0, 1 | 0, 1 | 0 | 3 → counts [3, 2, 0, 1, 0, 0]
    np.testing.assert_array_equal(item_popularity(split), [3, 2, 0, 1, 0, 0])


def test_evaluate_itempop_full_ranking_by_hand(split) -> None:
    metrics = evaluate_itempop(split, k=1)
    # full ranking (train + validation removed), popularity [3, 2, 0, 1, 0, 0]:
    # user 0: candidates 3, 4, 5 → 3 (pop 1) beats test 4 (pop 0), tie with 5 → rank 1.5 → miss
    # user 1: candidates 2, 4, 5 → all pop 0, two ties → rank 1 → miss
    # user 2: candidates 2..5 → 3 beats test 2, two ties → rank 2 → miss
    # user 3: candidates 0, 1, 2, 4, 5 → test 0 has the top pop 3 → rank 0 → hit
    assert metrics["full_hr@1"] == pytest.approx(0.25)
    assert metrics["full_ndcg@1"] == pytest.approx(0.25)
    # users with a validation item are evaluated too: 4 users in all
    assert len(split.evaluated_users()) == 4
