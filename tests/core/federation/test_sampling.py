"""Server-side user sampling for the cohort executor."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.core.federation.sampling import sample_users


def test_samples_k_distinct_sorted_users_reproducibly() -> None:
    a = sample_users(100, 10, seed=1, server_round=3, purpose="train")
    assert len(a) == 10 and len(set(a.tolist())) == 10 and np.all(np.diff(a) > 0)
    assert a.min() >= 0 and a.max() < 100
    np.testing.assert_array_equal(a, sample_users(100, 10, seed=1, server_round=3, purpose="train"))
    assert not np.array_equal(a, sample_users(100, 10, seed=1, server_round=4, purpose="train"))
    assert not np.array_equal(a, sample_users(100, 10, seed=1, server_round=3, purpose="evaluate"))


def test_asking_for_everyone_gives_everyone() -> None:
    np.testing.assert_array_equal(sample_users(7, 7, 0, 1, "train"), np.arange(7))
    np.testing.assert_array_equal(sample_users(7, 50, 0, 1, "train"), np.arange(7))


def test_each_user_is_equally_likely() -> None:
    counts = np.zeros(20)
    for r in range(2000):
        counts[sample_users(20, 5, seed=0, server_round=r, purpose="train")] += 1
    assert counts.sum() == 10_000
    assert np.all(np.abs(counts - 500) < 100)  # expected 500 each; sd ≈ 19


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="purpose"):
        sample_users(5, 2, 0, 1, "other")
    with pytest.raises(ValueError, match="≥ 1"):
        sample_users(5, 0, 0, 1, "train")
