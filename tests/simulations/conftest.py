"""Fixtures for end-to-end runs: nothing they start may outlive them."""

from __future__ import annotations

import os

import pytest

from fedrec.runtime.processes import pids_with_environ


def flower_processes() -> set[int]:
    """PIDs of live processes started by this test session's simulation runtimes.

    They are recognised by their FLWR_HOME, which lies below the session's own runtime
    folder (FEDREC_RUNTIME_DIR, set in tests/conftest.py), so other Flower runs on the
    machine do not count.
    """
    return pids_with_environ(f"FLWR_HOME={os.environ['FEDREC_RUNTIME_DIR']}/")


@pytest.fixture
def no_leftover_processes():
    before = flower_processes()
    yield
    leftover = flower_processes() - before - {os.getpid()}
    assert not leftover, f"processes left behind: {sorted(leftover)}"


@pytest.fixture
def live_runtime_processes():
    """The function that lists this session's live runtime processes (for mid-run checks)."""
    return flower_processes
