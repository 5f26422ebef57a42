"""The interactions type: who interacted with what, when, and how strongly.

Raw ids (ints or strings, as they appear in a file) are re-indexed to dense
``0..n_users-1`` and ``0..n_items-1`` so that they can index embedding tables;
the raw ids are kept (``user_ids[u]`` is the raw id of dense user ``u``) so that
results can be reported in the original vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Interactions:
    """A log of user–item interactions with dense ids.

    Attributes:
        users: ``(n,)`` int64 dense user index of each interaction.
        items: ``(n,)`` int64 dense item index of each interaction.
        ratings: ``(n,)`` float32 strength (stars, counts), or ``None`` when absent.
        timestamps: ``(n,)`` int64 time of each interaction, or ``None`` when absent.
        user_ids: ``(n_users,)`` raw id of each dense user.
        item_ids: ``(n_items,)`` raw id of each dense item.
    """

    users: NDArray[np.int64]
    items: NDArray[np.int64]
    ratings: NDArray[np.float32] | None
    timestamps: NDArray[np.int64] | None
    user_ids: NDArray
    item_ids: NDArray

    def __post_init__(self) -> None:
        n = len(self.users)
        if len(self.items) != n:
            raise ValueError(f"users and items differ in length: {n} vs {len(self.items)}")
        for name in ("ratings", "timestamps"):
            column = getattr(self, name)
            if column is not None and len(column) != n:
                raise ValueError(f"{name} has {len(column)} entries, expected {n}")
        if n and (self.users.min() < 0 or self.users.max() >= len(self.user_ids)):
            raise ValueError("a dense user index is outside 0..n_users-1")
        if n and (self.items.min() < 0 or self.items.max() >= len(self.item_ids)):
            raise ValueError("a dense item index is outside 0..n_items-1")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_raw(
        cls,
        users: Sequence | NDArray,
        items: Sequence | NDArray,
        ratings: Sequence[float] | NDArray | None = None,
        timestamps: Sequence[int] | NDArray | None = None,
    ) -> "Interactions":
        """Re-index raw ids to dense ones (sorted order of the raw ids).

        Duplicate (user, item) pairs are kept only once, the latest one (by
        timestamp when present, else the last in input order), because implicit
        feedback treats an interaction as a set membership.
        """
        raw_users = np.asarray(users)
        raw_items = np.asarray(items)
        if raw_users.shape != raw_items.shape or raw_users.ndim != 1:
            raise ValueError("users and items must be 1-D sequences of the same length")
        user_ids, dense_users = np.unique(raw_users, return_inverse=True)
        item_ids, dense_items = np.unique(raw_items, return_inverse=True)
        rating_arr = None if ratings is None else np.asarray(ratings, dtype=np.float32)
        time_arr = None if timestamps is None else np.asarray(timestamps, dtype=np.int64)
        for name, column in (("ratings", rating_arr), ("timestamps", time_arr)):
            if column is not None and column.shape != raw_users.shape:
                raise ValueError(f"{name} has {len(column)} entries, expected {len(raw_users)}")

        keep = _last_occurrence_mask(dense_users, dense_items, len(item_ids), time_arr)
        return cls(
            users=dense_users[keep].astype(np.int64),
            items=dense_items[keep].astype(np.int64),
            ratings=None if rating_arr is None else rating_arr[keep],
            timestamps=None if time_arr is None else time_arr[keep],
            user_ids=user_ids,
            item_ids=item_ids,
        )


def _last_occurrence_mask(
    users: NDArray, items: NDArray, n_items: int, timestamps: NDArray | None
) -> NDArray[np.bool_]:
    """Mask keeping one row per (user, item): the latest by time, ties by position."""
    n = len(users)
    pair = users.astype(np.int64) * n_items + items.astype(np.int64)
    position = np.arange(n)
    time = timestamps if timestamps is not None else np.zeros(n, dtype=np.int64)
    # Sort by pair, then time, then position; the last row of each pair wins.
    order = np.lexsort((position, time, pair))
    last_of_pair = np.ones(n, dtype=bool)
    last_of_pair[:-1] = pair[order][1:] != pair[order][:-1]
    keep = np.zeros(n, dtype=bool)
    keep[order[last_of_pair]] = True
    return keep
