"""On-device state: each user's private (local) parameters, kept across rounds.

In simulation the store lives in the node's ``context.state`` (a Flower
``RecordDict`` that Flower keeps on the node for the whole run and never sends).
A user absent from the store has never trained on this node.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from fedrec.core.wire import USER_STATE_PREFIX

Arrays = dict[str, np.ndarray]


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
