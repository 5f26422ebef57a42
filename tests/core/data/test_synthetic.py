"""Tests for :mod:`fedrec.core.data.synthetic`: determinism, size, long tail, minimum activity."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.core.data.interactions import Interactions
from fedrec.core.data.synthetic import SyntheticConfig, generate_synthetic

COLUMNS = ("users", "items", "ratings", "timestamps", "user_ids", "item_ids")
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module", params=SEEDS)
def data(request) -> Interactions:
    return generate_synthetic(request.param)


def test_same_seed_gives_identical_arrays() -> None:
    a, b = generate_synthetic(3), generate_synthetic(3)
    for column in COLUMNS:
        x, y = getattr(a, column), getattr(b, column)
        assert x.dtype == y.dtype, column
        np.testing.assert_array_equal(x, y, err_msg=column)


def test_different_seeds_give_different_data() -> None:
    a, b = generate_synthetic(0), generate_synthetic(1)
    # the number of interactions already differs (29243 vs 28797), and so do the pairs
    assert len(a) != len(b) or not np.array_equal(a.items, b.items)
    pairs_a = set(zip(a.users.tolist(), a.items.tolist()))
    pairs_b = set(zip(b.users.tolist(), b.items.tolist()))
    assert len(pairs_a ^ pairs_b) > 0.5 * len(pairs_a)


def test_sizes(data: Interactions) -> None:
    config = SyntheticConfig()
    assert data.n_users == config.n_users == 1000
    # items nobody drew are dropped by the re-indexing: seeds 0 and 1 keep all 500,
    # seed 2 keeps 498; the raw ids are the generator's 0..499
    assert 490 <= data.n_items <= config.n_items == 500
    assert set(data.item_ids.tolist()) <= set(range(500))
    # each user has 10..80 items, around a median of 25: ~25-35 per user on average
    assert config.min_items * 1000 <= len(data) <= config.max_items * 1000
    assert 20_000 <= len(data) <= 35_000
    assert 20 <= np.median(np.bincount(data.users)) <= 30


def test_every_user_has_between_min_and_max_distinct_items(data: Interactions) -> None:
    config = SyntheticConfig()
    per_user = np.bincount(data.users, minlength=data.n_users)
    assert per_user.min() >= config.min_items
    assert per_user.max() <= config.max_items
    # no (user, item) pair appears twice
    pairs = data.users * data.n_items + data.items
    assert len(np.unique(pairs)) == len(data)


def test_popularity_has_a_long_tail(data: Interactions) -> None:
    counts = np.sort(np.bincount(data.items, minlength=data.n_items))[::-1]
    share = counts / counts.sum()
    top_10 = share[: data.n_items // 10].sum()  # 50 most popular items
    bottom_50 = share[data.n_items // 2 :].sum()  # 250 least popular items
    # seed 0: top 10% hold 26.9% of interactions, bottom 50% hold 20.4%.
    # A uniform catalogue would give 10% and 50%; per item the head is ~6.6x the tail.
    assert top_10 > bottom_50
    assert top_10 > 2 * 0.10
    assert bottom_50 < 0.6 * 0.50
    per_item_ratio = (top_10 / 50) / (bottom_50 / 250)
    assert per_item_ratio > 4


def test_ratings_and_timestamps(data: Interactions) -> None:
    assert set(np.unique(data.ratings).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    # every user's interactions have distinct timestamps (a strict order for leave-one-out)
    for u in range(0, data.n_users, 97):
        times = data.timestamps[data.users == u]
        assert len(np.unique(times)) == len(times)


def test_small_config_respects_min_items() -> None:
    config = SyntheticConfig(n_users=40, n_items=30, min_items=5, max_items=12, median_items=6)
    data = generate_synthetic(0, config)
    per_user = np.bincount(data.users, minlength=data.n_users)
    assert data.n_users == 40
    assert per_user.min() >= 5
    assert per_user.max() <= 12


def test_max_items_larger_than_catalogue_raises() -> None:
    with pytest.raises(ValueError, match="max_items"):
        generate_synthetic(0, SyntheticConfig(n_items=50, max_items=80))


def test_sized_synthetic_names_give_that_many_users() -> None:
    from fedrec.core.data.loaders import load_dataset

    assert load_dataset("synthetic-300").n_users == 300
    assert load_dataset("synthetic-2k").n_users == 2000
    with pytest.raises(ValueError, match="at least one user"):
        load_dataset("synthetic-0")


def test_generating_in_blocks_draws_the_same_interactions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of users consume the generator as one draw would: same users, items, times."""
    from fedrec.core.data import synthetic

    config = synthetic.SyntheticConfig(n_users=250)
    whole = synthetic.generate_synthetic(5, config)
    monkeypatch.setattr(synthetic, "GENERATION_BLOCK_USERS", 64)
    blocked = synthetic.generate_synthetic(5, config)
    for name in ("users", "items", "timestamps", "user_ids", "item_ids"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(blocked, name))
    # ratings come from the affinity standardised by moments accumulated over blocks
    assert np.mean(whole.ratings == blocked.ratings) > 0.99
