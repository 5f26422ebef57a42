"""Shared fixtures of the baseline tests: a small random leave-one-out split, one torch thread."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from fedrec.core.data.interactions import Interactions
from fedrec.core.data.split import LeaveOneOutSplit, leave_one_out


def random_split(n_users: int = 40, n_items: int = 30, per_user: int = 8, seed: int = 0) -> LeaveOneOutSplit:
    """Each user interacts with ``per_user`` distinct uniformly drawn items, at increasing times."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, size=per_user, replace=False) for _ in range(n_users)])
    return leave_one_out(Interactions.from_raw(users, items, timestamps=np.arange(len(users))), seed=seed)


@pytest.fixture()
def small_split() -> LeaveOneOutSplit:
    return random_split()


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """Run torch on one thread (small tensors; the test machine is shared), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
