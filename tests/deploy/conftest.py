"""The ``deployment`` fixture: a server and devices on 127.0.0.1, all stopped at the end."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from harness import Deployment, processes_below


@pytest.fixture
def deployment(tmp_path):
    root = Path(tmp_path)
    before = processes_below(root)
    deployed = Deployment(root)
    try:
        yield deployed
    finally:
        deployed.close()
        time.sleep(0.5)
        leftover = processes_below(root) - before - {os.getpid()}
        for pid in leftover:  # never leave anything running, but fail the test
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not leftover, f"processes left behind: {sorted(leftover)}"


