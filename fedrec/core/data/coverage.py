"""Which users of a split a run can train and which it can evaluate, said before it starts.

A user's interactions are split before any round (leave-one-out: the latest is the test
item, the one before it the validation item, the rest train; the rating hold-out keeps a
share of a user's ratings for the test). A user with too few interactions ends up with
no training data or nothing held out: the run skips it, silently. :class:`UserCoverage`
counts and names those users so that ``fedrec simulate`` can say so, and refuse a run
in which nobody can be evaluated, before a runtime starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

SHOWN_IDS = 5  # raw ids named in a message; the rest are counted


@dataclass(frozen=True)
class UserCoverage:
    """How many users a run cannot train or evaluate, and the raw ids of the first few.

    Attributes:
        n_users: every user of the data set.
        n_untrainable: users without training data; ``untrainable``: the first raw ids.
        n_unevaluated: users without a held-out test item; ``unevaluated``: the first raw ids.
        n_validated: users with a validation item (``None``: the split holds none, e.g.
            the rating hold-out).
    """

    n_users: int
    n_untrainable: int
    untrainable: tuple[str, ...]
    n_unevaluated: int
    unevaluated: tuple[str, ...]
    n_validated: int | None = None

    @classmethod
    def from_masks(cls, user_ids: NDArray, trainable: NDArray[np.bool_], evaluated: NDArray[np.bool_],
                   validated: NDArray[np.bool_] | None = None, shown: int = SHOWN_IDS) -> "UserCoverage":
        """The coverage of users whose dense index ``u`` has raw id ``user_ids[u]``."""
        ids = np.asarray(user_ids)
        untrainable = np.flatnonzero(~np.asarray(trainable, dtype=bool))
        unevaluated = np.flatnonzero(~np.asarray(evaluated, dtype=bool))
        return cls(
            n_users=len(ids),
            n_untrainable=len(untrainable),
            untrainable=tuple(str(u) for u in ids[untrainable[:shown]]),
            n_unevaluated=len(unevaluated),
            unevaluated=tuple(str(u) for u in ids[unevaluated[:shown]]),
            n_validated=None if validated is None else int(np.count_nonzero(validated)),
        )

    @property
    def n_trainable(self) -> int:
        return self.n_users - self.n_untrainable

    @property
    def n_evaluated(self) -> int:
        return self.n_users - self.n_unevaluated


def name_users(first: tuple[str, ...], total: int) -> str:
    """``a, b, c`` or ``a, b, c, … (12 more)``: the ``first`` raw ids of ``total`` users."""
    named = ", ".join(first)
    return named if total <= len(first) else f"{named}, … ({total - len(first)} more)"
