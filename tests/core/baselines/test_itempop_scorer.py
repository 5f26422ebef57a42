"""ItemPop as a Scorer: every user gets the training counts."""

from __future__ import annotations

import numpy as np

from fedrec.core.baselines.popularity import ItemPop
from fedrec.core.data.split import NO_ITEM, LeaveOneOutSplit


def test_scores_are_the_training_counts_for_every_user() -> None:
    # training items: user 0 → 0, 1; user 1 → 0, 3; user 2 → 0 → counts [3, 1, 0, 1]
    split = LeaveOneOutSplit(
        n_users=3,
        n_items=4,
        train_indptr=np.array([0, 2, 4, 5]),
        train_items=np.array([0, 1, 0, 3, 0]),
        validation_item=np.full(3, NO_ITEM),
        test_item=np.full(3, NO_ITEM),
        seed=0,
    )
    scores = ItemPop().fit(split).score_users(np.array([2, 0]))
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, [[3, 1, 0, 1], [3, 1, 0, 1]])
