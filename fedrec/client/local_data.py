"""A deployed device's own interactions: its CSV, read against the server's item catalogue.

The global model's item rows follow the **catalogue**, a public list of raw item ids
that the server sends with every instruction (row ``i`` of every item table is item
``catalogue[i]``). A device reads its CSV (``user,item[,rating[,timestamp]]``, the format
of :mod:`fedrec.core.data.csv_file`), keeps the rows whose item is in the catalogue
(the rest cannot be scored by this model; their count is reported), numbers its own
users densely in the sorted order of their raw ids, and splits each user's history with
the same leave-one-out rule as in simulation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedrec.core.data.csv_file import load_csv
from fedrec.core.data.interactions import Interactions
from fedrec.core.data.split import LeaveOneOutSplit, leave_one_out


@dataclass(frozen=True)
class LocalData:
    """The device's users (raw ids, dense order) and their split over the catalogue."""

    split: LeaveOneOutSplit
    user_ids: tuple[str, ...]
    unknown_item_rows: int  # CSV rows whose item is not in the catalogue (not used)

    def user_index(self, raw_user: str) -> int:
        try:
            return self.user_ids.index(raw_user)
        except ValueError:
            raise KeyError(f"user {raw_user!r} is not in this device's data") from None


def load_local_data(data_file: str | Path, catalogue: tuple[str, ...], seed: int,
                    eval_negatives: int = 99) -> LocalData:
    """The device's data over ``catalogue`` (cached while the file is unchanged)."""
    path = Path(data_file).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"the device's data file {path} does not exist")
    stat = os.stat(path)
    return _cached(str(path), stat.st_mtime_ns, stat.st_size, catalogue, seed, eval_negatives)


@lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int, size: int, catalogue: tuple[str, ...], seed: int,
            eval_negatives: int) -> LocalData:
    raw = load_csv(path)
    index = {item: row for row, item in enumerate(catalogue)}
    item_rows = np.array([index.get(str(raw_id), -1) for raw_id in raw.item_ids], dtype=np.int64)
    mapped = item_rows[raw.items]
    known = mapped >= 0
    if not known.any():
        raise ValueError(f"{path}: none of its items is in the server's catalogue "
                         f"({len(catalogue)} items, e.g. {catalogue[:3]})")
    used_users = np.unique(raw.users[known])
    user_rows = np.full(raw.n_users, -1, dtype=np.int64)
    user_rows[used_users] = np.arange(len(used_users))
    data = Interactions(
        users=user_rows[raw.users[known]],
        items=mapped[known],
        ratings=None if raw.ratings is None else raw.ratings[known],
        timestamps=None if raw.timestamps is None else raw.timestamps[known],
        user_ids=raw.user_ids[used_users],
        item_ids=np.asarray(catalogue),
    )
    split = leave_one_out(data, seed=seed, eval_negatives=eval_negatives)
    return LocalData(split, tuple(str(u) for u in data.user_ids), int((~known).sum()))
