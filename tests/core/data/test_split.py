"""Tests for :mod:`fedrec.core.data.split`: leave-one-out and evaluation negatives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrec.core.data.interactions import Interactions
from fedrec.core.data.split import NO_ITEM, LeaveOneOutSplit, UserData, leave_one_out

SHARED_ML100K = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ml-100k"


@pytest.fixture()
def tiny() -> Interactions:
    """Three users with 4, 2 and 1 interactions.

    Dense ids: users a=0, b=1, c=2; items w=0, x=1, y=2, z=3.
    a: y@10, z@20, x@30, w@40 → train [y, z], validation x, test w
    b: y@1, x@5              → train [y], no validation, test x
    c: z@3                   → train [z] only, not evaluated
    """
    return Interactions.from_raw(
        users=["a", "a", "b", "a", "c", "a", "b"],
        items=["x", "y", "x", "z", "z", "w", "y"],
        timestamps=[30, 10, 5, 20, 3, 40, 1],
    )


def test_latest_is_test_second_latest_is_validation(tiny: Interactions) -> None:
    split = leave_one_out(tiny, seed=0)
    # a: test w=0, validation x=1, train y=2, z=3 (in time order)
    assert split.test_item[0] == 0
    assert split.validation_item[0] == 1
    np.testing.assert_array_equal(split.train_items_of(0), [2, 3])


def test_user_with_two_interactions_has_no_validation(tiny: Interactions) -> None:
    split = leave_one_out(tiny, seed=0)
    # b: test x=1, train y=2
    assert split.test_item[1] == 1
    assert split.validation_item[1] == NO_ITEM
    np.testing.assert_array_equal(split.train_items_of(1), [2])


def test_user_with_one_interaction_is_train_only(tiny: Interactions) -> None:
    split = leave_one_out(tiny, seed=0)
    # c: train z=3, nothing held out, not evaluated
    assert split.test_item[2] == NO_ITEM
    assert split.validation_item[2] == NO_ITEM
    np.testing.assert_array_equal(split.train_items_of(2), [3])
    np.testing.assert_array_equal(split.evaluated_users(), [0, 1])
    assert not split.user_data(2).has_test


def test_csr_layout(tiny: Interactions) -> None:
    split = leave_one_out(tiny, seed=0)
    # train counts 2, 1, 1 → indptr [0, 2, 3, 4]
    np.testing.assert_array_equal(split.train_indptr, [0, 2, 3, 4])
    np.testing.assert_array_equal(split.train_items, [2, 3, 2, 3])
    np.testing.assert_array_equal(split.train_users(), [0, 0, 1, 2])
    assert (split.n_users, split.n_items) == (3, 4)


def test_equal_timestamps_are_ordered_by_input_position() -> None:
    data = Interactions.from_raw(users=[1, 1, 1], items=[10, 20, 30], timestamps=[5, 5, 5])
    split = leave_one_out(data, seed=0)
    # all at t=5: input order decides, so 30 (dense 2) is the latest, 20 (dense 1) the one before
    assert split.test_item[0] == 2
    assert split.validation_item[0] == 1
    np.testing.assert_array_equal(split.train_items_of(0), [0])


def test_the_seed_does_not_matter_with_timestamps(tiny: Interactions) -> None:
    a, b = leave_one_out(tiny, seed=0), leave_one_out(tiny, seed=123)
    np.testing.assert_array_equal(a.test_item, b.test_item)
    np.testing.assert_array_equal(a.validation_item, b.validation_item)
    np.testing.assert_array_equal(a.train_items, b.train_items)


# --- without timestamps ---------------------------------------------------------


@pytest.fixture()
def untimed() -> Interactions:
    """20 users with 3..8 items each out of 30, no timestamps."""
    rng = np.random.default_rng(5)
    users, items = [], []
    for u in range(20):
        chosen = rng.choice(30, size=3 + u % 6, replace=False)
        users += [u] * len(chosen)
        items += chosen.tolist()
    return Interactions.from_raw(users, items)


def _split_arrays(split: LeaveOneOutSplit) -> tuple[np.ndarray, ...]:
    return split.train_indptr, split.train_items, split.validation_item, split.test_item


def test_untimed_split_is_seeded(untimed: Interactions) -> None:
    a, b = leave_one_out(untimed, seed=4), leave_one_out(untimed, seed=4)
    for x, y in zip(_split_arrays(a), _split_arrays(b)):
        np.testing.assert_array_equal(x, y)
    c = leave_one_out(untimed, seed=5)
    assert not np.array_equal(a.test_item, c.test_item)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_untimed_split_partitions_each_users_items(untimed: Interactions, seed: int) -> None:
    split = leave_one_out(untimed, seed=seed)
    for u in range(untimed.n_users):
        items = untimed.items[untimed.users == u]
        held_out = [i for i in (split.validation_item[u], split.test_item[u]) if i != NO_ITEM]
        parts = split.train_items_of(u).tolist() + held_out
        # every user has ≥ 3 items: 1 test, 1 validation, the rest train, no overlap
        assert len(held_out) == 2
        assert sorted(parts) == sorted(items.tolist())


# --- evaluation negatives -------------------------------------------------------


@pytest.fixture()
def wide() -> Interactions:
    """4 users with 10..40 items each out of 200 (all 200 items occur)."""
    rng = np.random.default_rng(11)
    users, items, times = [], [], []
    for u, n in enumerate((10, 20, 30, 40)):
        chosen = rng.choice(200, size=n, replace=False)
        users += [u] * n
        items += chosen.tolist()
        times += list(range(n))
    users += [4] * 200  # a fifth user has every item, so all 200 exist
    items += list(range(200))
    times += list(range(200))
    return Interactions.from_raw(users, items, timestamps=times)


@pytest.mark.parametrize("count", [1, 50, 99])
def test_eval_negatives_are_unseen_distinct_and_of_the_requested_count(
    wide: Interactions, count: int
) -> None:
    split = leave_one_out(wide, seed=3, eval_negatives=count)
    for u in range(4):
        user = split.user_data(u)
        seen = set(wide.items[wide.users == u].tolist())
        negatives = user.eval_negatives.tolist()
        assert len(negatives) == count
        assert len(set(negatives)) == count
        assert not seen & set(negatives)
        assert {user.test_item, user.validation_item} <= seen
        assert all(0 <= i < 200 for i in negatives)


def test_eval_negatives_are_deterministic(wide: Interactions) -> None:
    split = leave_one_out(wide, seed=3)
    again = leave_one_out(wide, seed=3)
    for u in range(4):
        first = split.user_data(u).eval_negatives
        np.testing.assert_array_equal(first, split.user_data(u).eval_negatives)
        np.testing.assert_array_equal(first, again.user_data(u).eval_negatives)
    other_seed = leave_one_out(wide, seed=4)
    assert not np.array_equal(split.user_data(0).eval_negatives, other_seed.user_data(0).eval_negatives)
    # users get different negatives from one another, too
    assert not np.array_equal(split.user_data(0).eval_negatives, split.user_data(1).eval_negatives)


def test_eval_negatives_fall_back_to_every_unseen_item() -> None:
    data = Interactions.from_raw(
        users=[0, 0, 0, 1, 1, 1, 1, 1, 1], items=[0, 1, 2, 0, 1, 2, 3, 4, 5], timestamps=range(9)
    )
    split = leave_one_out(data, seed=0, eval_negatives=99)
    # user 0 saw items 0,1,2 of 6: only 3, 4, 5 are left
    np.testing.assert_array_equal(split.user_data(0).eval_negatives, [3, 4, 5])


def test_excluded_from_ranking(tiny: Interactions) -> None:
    split = leave_one_out(tiny, seed=0)
    a, b, c = (split.user_data(u) for u in range(3))
    # a: train y, z + validation x; b: train y only; the test item is never excluded
    assert sorted(a.excluded_from_ranking().tolist()) == [1, 2, 3]
    assert b.excluded_from_ranking().tolist() == [2]
    assert c.excluded_from_ranking().tolist() == [3]
    assert a.test_item not in a.excluded_from_ranking()


def test_user_data_fields(tiny: Interactions) -> None:
    user = leave_one_out(tiny, seed=0, eval_negatives=99).user_data(1)
    assert isinstance(user, UserData)
    assert (user.user, user.n_items, user.test_item, user.validation_item) == (1, 4, 1, NO_ITEM)
    # b saw x, y out of w, x, y, z: negatives are w, z
    np.testing.assert_array_equal(user.eval_negatives, [0, 3])


@pytest.mark.parametrize("user", [-1, 3])
def test_user_data_rejects_unknown_users(tiny: Interactions, user: int) -> None:
    with pytest.raises(IndexError):
        leave_one_out(tiny).user_data(user)


# --- MovieLens 100K ---------------------------------------------------------------


def test_ml100k_split_sizes() -> None:
    if not (SHARED_ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens 100K u.data not available at {SHARED_ML100K}")
    from fedrec.core.data.movielens import load_ml100k

    data = load_ml100k(SHARED_ML100K)
    assert (data.n_users, data.n_items, len(data)) == (943, 1682, 100_000)
    split = leave_one_out(data, seed=0)
    # every user rated ≥ 20 movies: 943 test + 943 validation items are held out
    # → 100000 − 2·943 = 98114 training interactions
    assert len(split.evaluated_users()) == 943
    assert len(split.train_items) == 98_114
    assert (split.validation_item != NO_ITEM).all()
