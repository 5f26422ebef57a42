"""Which users take part in a round when the server samples users itself (cohort executor).

The per-client executor lets Flower's FedAvg sample ``clients-per-round`` nodes (one
node per user) uniformly without replacement. The cohort executor runs a few nodes
that each hold many users, so the server samples the users: ``k`` of ``n`` uniformly
without replacement, from a generator seeded by ``(seed, round, purpose)`` — the same
distribution over users as the per-client path, and reproducible. With ``k ≥ n`` every
user takes part.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

PURPOSES = {"train": 0, "evaluate": 1}


def sample_users(n_users: int, k: int, seed: int, server_round: int, purpose: str) -> NDArray[np.int64]:
    """Sorted dense ids of ``min(k, n_users)`` users drawn without replacement."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}: choose one of {sorted(PURPOSES)}")
    if n_users < 1 or k < 1:
        raise ValueError(f"n_users and k must be ≥ 1, got {n_users} and {k}")
    if k >= n_users:
        return np.arange(n_users, dtype=np.int64)
    rng = np.random.default_rng([seed, server_round, PURPOSES[purpose]])
    return np.sort(rng.choice(n_users, size=k, replace=False)).astype(np.int64)
