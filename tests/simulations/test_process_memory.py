"""Peak memory of a marked group of processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from fedrec.simulations.process_memory import PeakMemory, group_memory_bytes

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")


def test_a_marked_child_that_holds_200_mb_is_measured() -> None:
    marker = f"FEDREC_MEMORY_TEST={os.getpid()}-{time.time_ns()}"
    key, value = marker.split("=")
    env = {**os.environ, key: value}
    hold = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(3)"
    with PeakMemory(marker, interval_s=0.1) as peak:
        child = subprocess.Popen([sys.executable, "-c", hold], env=env)
        child.wait(timeout=30)
    assert peak.bytes > 200 * 2**20
    assert group_memory_bytes(marker) == 0  # the child is gone


def test_an_empty_marker_is_refused() -> None:
    with pytest.raises(ValueError):
        PeakMemory("")
