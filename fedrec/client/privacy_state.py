"""On-device accountant state: each user's mechanism history, kept across rounds.

A user's history is the list of ``(σ, q, steps)`` its data went through (see
:mod:`fedrec.core.privacy.accounting`); its ε is recomputed from it, so it accumulates
over every round the user takes part in and never restarts from zero. In simulation it
lives in the node's ``context.state`` next to the user vectors.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, RecordDict

from fedrec.core.privacy.accounting import Step, compact
from fedrec.protocol.wire import PRIVACY_STATE_PREFIX

_SIGMA, _RATE, _STEPS = "sigma", "rate", "steps"


class PrivacyHistoryStore:
    """Accountant histories of this node's users, keyed by dense user id."""

    def __init__(self, state: RecordDict) -> None:
        self._state = state

    @staticmethod
    def _key(user: int) -> str:
        return f"{PRIVACY_STATE_PREFIX}{user}"

    def load(self, user: int) -> list[Step]:
        record = self._state.get(self._key(user))
        if record is None:
            return []
        if not isinstance(record, ConfigRecord):
            raise TypeError(f"state entry {self._key(user)} is not a ConfigRecord")
        sigmas, rates, steps = record[_SIGMA], record[_RATE], record[_STEPS]
        if not len(sigmas) == len(rates) == len(steps):
            raise ValueError(f"the accountant history of user {user} is corrupt (lists of unequal length)")
        return [(float(s), float(q), int(n)) for s, q, n in zip(sigmas, rates, steps)]

    def save(self, user: int, history: list[Step]) -> None:
        runs = compact(history)
        self._state[self._key(user)] = ConfigRecord({
            _SIGMA: [float(s) for s, _, _ in runs],
            _RATE: [float(q) for _, q, _ in runs],
            _STEPS: [int(n) for _, _, n in runs],
        })

    def load_many(self, users: list[int]) -> list[list[Step]]:
        return [self.load(user) for user in users]
