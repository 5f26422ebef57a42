"""Peak memory of a group of processes, sampled from ``/proc`` (Linux).

A Flower simulation spreads over several processes (SuperLink, ``flwr-simulation``,
Ray's GCS, raylet and workers), so one process's ``ru_maxrss`` says little. We sample,
every ``interval_s``, the **proportional set size** (PSS: each shared page divided
among the processes that map it, so shared libraries are not counted once per
process) of every process whose environment contains ``marker``, and keep the peak
of the sum. Sampling can miss a spike shorter than the interval.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def _environ_has(pid: str, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def _pss_bytes(pid: str) -> int:
    """PSS of one process (falls back to RSS where smaps_rollup is unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def group_memory_bytes(marker: str) -> int:
    """Summed PSS of the processes whose environment contains ``marker``, now."""
    needle = marker.encode()
    return sum(_pss_bytes(pid) for pid in os.listdir("/proc") if pid.isdigit() and _environ_has(pid, needle))


class PeakMemory:
    """``with PeakMemory(marker) as peak: …`` then ``peak.bytes``: the largest sampled sum."""

    def __init__(self, marker: str, interval_s: float = 0.5) -> None:
        if not marker:
            raise ValueError("an empty marker would match every process")
        self.marker = marker
        self.interval_s = interval_s
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.bytes = max(self.bytes, group_memory_bytes(self.marker))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
