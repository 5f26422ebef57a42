"""One suite every registered baseline must pass (fits, scores, is deterministic, refuses bad input)."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.core.baselines import BASELINES, build_baseline, evaluate_scorer
from fedrec.core.data.split import LeaveOneOutSplit

pytestmark = pytest.mark.usefixtures("one_thread")

FAST_OPTIONS = {"bpr": {"dim": 8, "epochs": 2, "batch_size": 64}}


def _build(name: str):
    return build_baseline(name, **FAST_OPTIONS.get(name, {}))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_scores_every_item_for_every_user(name: str, small_split: LeaveOneOutSplit) -> None:
    scorer = _build(name)
    assert scorer.fit(small_split) is scorer
    users = np.array([5, 0, 5])
    scores = scorer.score_users(users)
    assert scores.shape == (3, small_split.n_items) and scores.dtype == np.float32
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(scores[0], scores[2])
    assert scorer.score_users(np.array([], dtype=np.int64)).shape == (0, small_split.n_items)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_fits_are_deterministic(name: str, small_split: LeaveOneOutSplit) -> None:
    users = np.arange(small_split.n_users)
    first = _build(name).fit(small_split).score_users(users)
    np.testing.assert_array_equal(first, _build(name).fit(small_split).score_users(users))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_evaluates_to_metrics_in_range(name: str, small_split: LeaveOneOutSplit) -> None:
    metrics = evaluate_scorer(_build(name).fit(small_split), small_split, k=5)
    for key, value in metrics.items():
        if key.startswith("novelty"):
            assert value >= 0, key
        elif key.startswith("diversity"):
            assert np.isnan(value) or 0 <= value <= 2, key
        else:
            assert 0 <= value <= 1, key


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_scoring_before_fit_is_refused(name: str) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        _build(name).score_users(np.array([0]))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_users_outside_the_split_are_refused(name: str, small_split: LeaveOneOutSplit) -> None:
    scorer = _build(name).fit(small_split)
    with pytest.raises(ValueError, match="user ids must lie in"):
        scorer.score_users(np.array([small_split.n_users]))


def test_unknown_baseline_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown baseline 'slim'"):
        build_baseline("slim")
