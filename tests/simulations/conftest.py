"""Fixtures for end-to-end runs: nothing they start may outlive them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def flower_processes() -> set[int]:
    """PIDs of live processes started by this test session's simulation runtimes.

    They are recognised by their FLWR_HOME, which lies below the session's own runtime
    folder (FEDREC_RUNTIME_DIR, set in tests/conftest.py), so other Flower runs on the
    machine do not count.
    """
    marker = f"FLWR_HOME={os.environ['FEDREC_RUNTIME_DIR']}/".encode()
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if marker in environ and "State:\tZ" not in status:
            pids.add(int(entry.name))
    return pids


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
