"""Tests for :mod:`fedrec.core.data.interactions`: re-indexing, duplicates, validation."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.core.data.interactions import Interactions

# --- re-indexing --------------------------------------------------------------


def test_string_ids_are_reindexed_in_sorted_order() -> None:
    data = Interactions.from_raw(
        users=["bob", "alice", "carol", "alice"],
        items=["x", "z", "y", "x"],
    )
    # sorted users: alice=0, bob=1, carol=2; sorted items: x=0, y=1, z=2
    np.testing.assert_array_equal(data.user_ids, ["alice", "bob", "carol"])
    np.testing.assert_array_equal(data.item_ids, ["x", "y", "z"])
    np.testing.assert_array_equal(data.users, [1, 0, 2, 0])
    np.testing.assert_array_equal(data.items, [0, 2, 1, 0])
    assert (data.n_users, data.n_items, len(data)) == (3, 3, 4)


def test_int_ids_are_reindexed_in_numeric_order() -> None:
    data = Interactions.from_raw(users=[30, 10, 20, 10], items=[7, 5, 7, 100])
    # sorted users: 10=0, 20=1, 30=2; sorted items (numerically, so 100 is last): 5=0, 7=1, 100=2
    np.testing.assert_array_equal(data.user_ids, [10, 20, 30])
    np.testing.assert_array_equal(data.item_ids, [5, 7, 100])
    np.testing.assert_array_equal(data.users, [2, 0, 1, 0])
    np.testing.assert_array_equal(data.items, [1, 0, 1, 2])


def test_raw_ids_round_trip_through_the_dense_ids() -> None:
    raw_users = np.array(["u7", "u1", "u7", "u3", "u1"])
    raw_items = np.array([42, 3, 9, 42, 9])
    data = Interactions.from_raw(raw_users, raw_items)
    # user_ids[u] is the raw id of dense user u, so indexing gives the input back
    np.testing.assert_array_equal(data.user_ids[data.users], raw_users)
    np.testing.assert_array_equal(data.item_ids[data.items], raw_items)


def test_dtypes_of_the_columns() -> None:
    data = Interactions.from_raw([1, 2], [3, 4], ratings=[5, 1], timestamps=[10.0, 20.0])
    assert data.users.dtype == np.int64
    assert data.items.dtype == np.int64
    assert data.ratings.dtype == np.float32
    assert data.timestamps.dtype == np.int64
    np.testing.assert_array_equal(data.ratings, [5.0, 1.0])
    np.testing.assert_array_equal(data.timestamps, [10, 20])


def test_optional_columns_stay_none() -> None:
    data = Interactions.from_raw(["a"], ["b"])
    assert data.ratings is None
    assert data.timestamps is None


# --- duplicates ---------------------------------------------------------------


def test_duplicate_pair_keeps_the_latest_by_timestamp() -> None:
    data = Interactions.from_raw(
        users=["u", "u", "u", "v"],
        items=["i", "i", "i", "i"],
        ratings=[1.0, 4.0, 2.0, 3.0],
        timestamps=[5, 9, 7, 1],
    )
    # (u, i) appears at t=5, 9, 7: only t=9 (rating 4) survives; (v, i) is untouched.
    assert len(data) == 2
    np.testing.assert_array_equal(data.user_ids[data.users], ["u", "v"])
    np.testing.assert_array_equal(data.timestamps, [9, 1])
    np.testing.assert_array_equal(data.ratings, [4.0, 3.0])


def test_duplicate_pair_without_timestamps_keeps_the_last_in_input_order() -> None:
    data = Interactions.from_raw(
        users=[1, 1, 2, 1], items=[5, 5, 5, 5], ratings=[1.0, 2.0, 9.0, 3.0]
    )
    # (1, 5) three times: the last row (rating 3) wins; (2, 5) is kept.
    assert len(data) == 2
    np.testing.assert_array_equal(sorted(data.ratings.tolist()), [3.0, 9.0])
    rating_of_user_1 = data.ratings[data.user_ids[data.users] == 1]
    np.testing.assert_array_equal(rating_of_user_1, [3.0])


def test_duplicate_pair_with_equal_timestamps_keeps_the_last_in_input_order() -> None:
    data = Interactions.from_raw(
        users=[1, 1], items=[5, 5], ratings=[2.0, 4.0], timestamps=[100, 100]
    )
    np.testing.assert_array_equal(data.ratings, [4.0])


def test_distinct_pairs_keep_their_input_order() -> None:
    data = Interactions.from_raw(users=[3, 1, 2], items=[1, 2, 3], timestamps=[30, 10, 20])
    # no duplicates: nothing is dropped or reordered
    np.testing.assert_array_equal(data.user_ids[data.users], [3, 1, 2])
    np.testing.assert_array_equal(data.timestamps, [30, 10, 20])


# --- validation ---------------------------------------------------------------


def test_from_raw_rejects_users_and_items_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        Interactions.from_raw(users=[1, 2, 3], items=[1, 2])


def test_from_raw_rejects_two_dimensional_ids() -> None:
    with pytest.raises(ValueError, match="1-D"):
        Interactions.from_raw(users=[[1, 2]], items=[[1, 2]])


def test_from_raw_rejects_ratings_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="ratings"):
        Interactions.from_raw(users=[1, 2, 3], items=[1, 2, 3], ratings=[1.0, 2.0])


def test_from_raw_rejects_timestamps_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="timestamps"):
        Interactions.from_raw(users=[1, 2, 3], items=[1, 2, 3], timestamps=[1, 2])


def _ids(n: int) -> np.ndarray:
    return np.arange(n)


@pytest.mark.parametrize(
    ("column", "kwargs"),
    [
        ("items", dict(items=np.array([0, 1]))),
        ("ratings", dict(ratings=np.array([1.0, 2.0], dtype=np.float32))),
        ("timestamps", dict(timestamps=np.array([1, 2]))),
    ],
)
def test_constructor_rejects_columns_of_the_wrong_length(column: str, kwargs: dict) -> None:
    fields = dict(
        users=np.array([0, 1, 0]),
        items=np.array([0, 1, 1]),
        ratings=None,
        timestamps=None,
        user_ids=_ids(2),
        item_ids=_ids(2),
    )
    fields.update(kwargs)
    with pytest.raises(ValueError, match=column):
        Interactions(**fields)


@pytest.mark.parametrize(
    ("users", "items", "message"),
    [
        ([0, 2], [0, 1], "user index"),  # only 2 users: dense user 2 is out of range
        ([0, -1], [0, 1], "user index"),
        ([0, 1], [0, 5], "item index"),
    ],
)
def test_constructor_rejects_dense_ids_out_of_range(users, items, message) -> None:
    with pytest.raises(ValueError, match=message):
        Interactions(
            users=np.array(users),
            items=np.array(items),
            ratings=None,
            timestamps=None,
            user_ids=_ids(2),
            item_ids=_ids(2),
        )
