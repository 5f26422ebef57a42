"""Leave-one-out splitting for implicit feedback, as in the NCF paper (He et al., 2017).

Every interaction is a positive. For each user, interactions are ordered by
timestamp (ties by input order; a seeded random order when there are no
timestamps); the latest is the **test** item, the one before it the **validation**
item, the rest are training items. A user with 2 interactions has no validation
item, a user with 1 has only a training item (and is not evaluated).

The split also fixes each user's evaluation negatives (the NCF protocol ranks the
test item among 99 sampled items the user never interacted with), drawn from a
generator seeded by ``(seed, user)`` so that every process — a client, the central
twin — draws the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedrec.core.data.interactions import Interactions

NO_ITEM = -1


@dataclass(frozen=True)
class UserData:
    """Everything one client needs about its user (dense ids).

    Attributes:
        user: dense user index.
        n_items: catalogue size.
        train_items: ``(n_train,)`` training positives.
        validation_item: held-out validation item or ``NO_ITEM``.
        test_item: held-out test item or ``NO_ITEM``.
        eval_negatives: ``(≤99,)`` items never interacted with, for the NCF protocol, or
            ``None`` when the data was fetched for training only.
    """

    user: int
    n_items: int
    train_items: NDArray[np.int64]
    validation_item: int
    test_item: int
    eval_negatives: NDArray[np.int64] | None

    @property
    def has_test(self) -> bool:
        return self.test_item != NO_ITEM

    def excluded_from_ranking(self) -> NDArray[np.int64]:
        """Items removed before full ranking: training and validation items."""
        if self.validation_item == NO_ITEM:
            return self.train_items
        return np.append(self.train_items, self.validation_item)


@dataclass(frozen=True)
class LeaveOneOutSplit:
    """Per-user leave-one-out split in CSR form.

    ``train_items[train_indptr[u]:train_indptr[u+1]]`` are user ``u``'s training items.
    """

    n_users: int
    n_items: int
    train_indptr: NDArray[np.int64]
    train_items: NDArray[np.int64]
    validation_item: NDArray[np.int64]
    test_item: NDArray[np.int64]
    seed: int
    eval_negatives: int = 99

    def train_items_of(self, user: int) -> NDArray[np.int64]:
        return self.train_items[self.train_indptr[user] : self.train_indptr[user + 1]]

    def train_users(self) -> NDArray[np.int64]:
        """``(nnz,)`` dense user index of every training interaction."""
        return np.repeat(np.arange(self.n_users), np.diff(self.train_indptr))

    def evaluated_users(self) -> NDArray[np.int64]:
        return np.flatnonzero(self.test_item != NO_ITEM)

    def user_data(self, user: int, for_evaluation: bool = True) -> UserData:
        """User ``user``'s data; ``for_evaluation=False`` skips drawing the evaluation negatives."""
        if not 0 <= user < self.n_users:
            raise IndexError(f"user {user} outside 0..{self.n_users - 1}")
        train = self.train_items_of(user)
        val = int(self.validation_item[user])
        test = int(self.test_item[user])
        negatives = None
        if for_evaluation:
            held_out = [i for i in (val, test) if i != NO_ITEM]
            seen = np.concatenate([train, np.asarray(held_out, dtype=np.int64)])
            negatives = sample_eval_negatives(self.n_items, seen, self.eval_negatives, self.seed, user)
        return UserData(user, self.n_items, train, val, test, negatives)


def sample_eval_negatives(
    n_items: int, seen: NDArray[np.int64], count: int, seed: int, user: int
) -> NDArray[np.int64]:
    """``count`` distinct items outside ``seen``, from a generator seeded by (seed, user)."""
    candidates = np.setdiff1d(np.arange(n_items), seen, assume_unique=False)
    rng = np.random.default_rng([seed, user, 99])
    if len(candidates) <= count:
        return candidates.astype(np.int64)
    return np.sort(rng.choice(candidates, size=count, replace=False)).astype(np.int64)


def leave_one_out(data: Interactions, seed: int = 0, eval_negatives: int = 99) -> LeaveOneOutSplit:
    """Split ``data`` per user: latest → test, second latest → validation, rest → train."""
    n = len(data)
    rng = np.random.default_rng([seed, 7])
    if data.timestamps is not None:
        time_key = data.timestamps
    else:
        time_key = rng.permutation(n)  # a seeded random order stands in for time
    position = np.arange(n)
    order = np.lexsort((position, time_key, data.users))  # by user, then time, then position
    users_sorted = data.users[order]
    items_sorted = data.items[order]
    counts = np.bincount(data.users, minlength=data.n_users)
    ends = np.cumsum(counts)

    is_test = np.zeros(n, dtype=bool)
    is_val = np.zeros(n, dtype=bool)
    has_test = counts >= 2
    is_test[ends[has_test] - 1] = True
    has_val = counts >= 3
    is_val[ends[has_val] - 2] = True

    test_item = np.full(data.n_users, NO_ITEM, dtype=np.int64)
    test_item[users_sorted[is_test]] = items_sorted[is_test]
    validation_item = np.full(data.n_users, NO_ITEM, dtype=np.int64)
    validation_item[users_sorted[is_val]] = items_sorted[is_val]

    train_mask = ~(is_test | is_val)
    train_counts = np.bincount(users_sorted[train_mask], minlength=data.n_users)
    indptr = np.concatenate([[0], np.cumsum(train_counts)]).astype(np.int64)
    return LeaveOneOutSplit(
        n_users=data.n_users,
        n_items=data.n_items,
        train_indptr=indptr,
        train_items=items_sorted[train_mask].astype(np.int64),
        validation_item=validation_item,
        test_item=test_item,
        seed=seed,
        eval_negatives=eval_negatives,
    )
