"""A simulation on an existing Ray cluster: a one-node head started with ``ray start --head``."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fedrec.core.config.run_config import RunConfig
from fedrec.runtime.processes import console_script, free_listening_port, pid_alive
from fedrec.simulations.simulate import simulate

pytestmark = pytest.mark.slow


def _head_port() -> int:
    """A free port above Ray's default worker-port range (10002–19999)."""
    while (port := free_listening_port()) <= 20000:
        pass
    return port


def test_simulation_runs_on_an_existing_ray_cluster(tmp_path: Path, no_leftover_processes: None) -> None:
    port = _head_port()
    ray_dir = Path(tempfile.mkdtemp(prefix="frc-", dir="/tmp"))  # short: Ray's socket paths are limited
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [console_script("ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--temp-dir", str(ray_dir), "--include-dashboard", "false",
         "--disable-usage-stats", "--block"],
        env=env, stdout=(tmp_path / "ray.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "will now block forever" not in (tmp_path / "ray.log").read_text(errors="replace"):
            assert head.poll() is None and time.monotonic() < deadline, (tmp_path / "ray.log").read_text()
            time.sleep(0.5)
        config = RunConfig(rounds=2, clients_per_round=10, dim=8, eval_every=2, executor="cohort")
        summary = simulate(config, tmp_path / "run", show_progress=False, timeout_s=600,
                           ray_address=f"127.0.0.1:{port}")
        assert summary["rounds"] == 2 and 0 < summary["hr@10"] <= 1
        # the simulation's Ray driver joined this cluster: its log is in the cluster's session
        drivers = list(ray_dir.glob("session_*/logs/python-core-driver-*.log"))
        assert drivers, "no driver connected to the cluster"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)
        time.sleep(1)
        try:
            os.killpg(head.pid, signal.SIGKILL)  # Ray's daemons share the head's process group
        except ProcessLookupError:
            pass
        assert not pid_alive(head.pid)


def test_an_unreachable_ray_address_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no Ray cluster answers"):
        simulate(RunConfig(rounds=1), tmp_path / "run", show_progress=False, ray_address=f"127.0.0.1:{_head_port()}")
