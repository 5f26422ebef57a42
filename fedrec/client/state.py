"""On-device state: each user's private (local) parameters, kept across rounds.

In simulation the store lives in the node's ``context.state`` (a Flower
``RecordDict`` that Flower keeps on the node for the whole run and never sends).
A user absent from the store has never trained on this node.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from fedrec.core.arrays import Arrays
from fedrec.protocol.wire import USER_STATE_PREFIX


class UserVectorStore:
    """Private parameters of this node's users, keyed by dense user id."""

    def __init__(self, state: RecordDict) -> None:
        self._state = state

    @staticmethod
    def _key(user: int) -> str:
        return f"{USER_STATE_PREFIX}{user}"

    def load(self, user: int) -> Arrays | None:
        record = self._state.get(self._key(user))
        if record is None:
            return None
        if not isinstance(record, ArrayRecord):
            raise TypeError(f"state entry {self._key(user)} is not an ArrayRecord")
        return {name: array.numpy() for name, array in record.items()}

    def save(self, user: int, local: Arrays) -> None:
        self._state[self._key(user)] = ArrayRecord(
            {name: Array(np.ascontiguousarray(value)) for name, value in local.items()}
        )

    def __contains__(self, user: int) -> bool:
        return self._key(user) in self._state

    def load_many(self, users: list[int]) -> list[Arrays | None]:
        return [self.load(user) for user in users]

    def save_many(self, users: list[int], locals_: list[Arrays]) -> None:
        for user, local in zip(users, locals_):
            self.save(user, local)


class CohortVectorStore:
    """Private parameters of a cohort node's users, stacked: one array per local parameter.

    A cohort node holds thousands of users; one ``ArrayRecord`` per user would cost a
    record, its arrays and their (de)serialisation per user and round. Here row ``j``
    of each array belongs to ``held[j]`` (the node's users, sorted) and ``known[j]``
    says whether that user has trained on this node (else it has no vector yet).
    """

    KEY = f"{USER_STATE_PREFIX}cohort"
    KNOWN = "known"

    def __init__(self, state: RecordDict, held: list[int], shapes: dict[str, tuple[int, ...]]) -> None:
        self._state = state
        self._held = np.asarray(held, dtype=np.int64)
        if np.any(np.diff(self._held) <= 0):
            raise ValueError("held users must be sorted and distinct")
        record = state.get(self.KEY)
        if record is None:
            self._arrays = {name: np.zeros((len(held), *shape), dtype=np.float32) for name, shape in shapes.items()}
            self._known = np.zeros(len(held), dtype=np.uint8)
        else:
            if not isinstance(record, ArrayRecord):
                raise TypeError(f"state entry {self.KEY} is not an ArrayRecord")
            loaded = {name: array.numpy() for name, array in record.items()}
            self._known = loaded.pop(self.KNOWN).astype(np.uint8)
            expected = {name: (len(held), *shape) for name, shape in shapes.items()}
            got = {name: value.shape for name, value in loaded.items()}
            if got != expected or self._known.shape != (len(held),):
                raise ValueError(f"stored cohort vectors have shapes {got}, expected {expected}")
            self._arrays = {name: value.astype(np.float32, copy=True) for name, value in loaded.items()}

    def _rows(self, users: list[int]) -> np.ndarray:
        rows = np.searchsorted(self._held, users)
        if len(users) and (np.any(rows >= len(self._held)) or np.any(self._held[np.minimum(rows, len(self._held) - 1)] != users)):
            raise KeyError("some users are not held by this node")
        return rows

    def load_many(self, users: list[int]) -> list[Arrays | None]:
        rows = self._rows(users)
        return [{name: value[row] for name, value in self._arrays.items()} if self._known[row] else None
                for row in rows]

    def save_many(self, users: list[int], locals_: list[Arrays]) -> None:
        """Set the users' vectors and write the whole store back into the node state."""
        rows = self._rows(users)
        for row, local in zip(rows, locals_):
            for name, value in self._arrays.items():
                value[row] = local[name]
            self._known[row] = 1
        arrays = {name: Array(np.ascontiguousarray(value)) for name, value in self._arrays.items()}
        arrays[self.KNOWN] = Array(self._known)
        self._state[self.KEY] = ArrayRecord(arrays)
