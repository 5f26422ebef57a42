"""End-to-end: `flwr run .` of this repository's Flower App against a simulation SuperLink."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fedrec.core.run_files import METRICS_FILE, SUMMARY_FILE, read_jsonl
from fedrec.simulations.flower_runtime import ray_failed_to_start, simulation_runtime
from fedrec.simulations.simulate import RUNTIME_START_ATTEMPTS

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_flwr_run_dot_trains_and_writes_the_run_directory(tmp_path: Path, no_leftover_processes: None) -> None:
    out = tmp_path / "run"
    out.mkdir()
    # 50 simulated nodes for 1000 synthetic users: each node is a site holding 20 users
    run_config = {"out-dir": str(out), "rounds": 2, "clients-per-round": 5, "dim": 8, "executor": "per-client",
                  "eval-every": 2, "eval-fraction": 0.5}
    for _attempt in range(RUNTIME_START_ATTEMPTS):  # fresh runtimes if Ray's head node failed to start
        with simulation_runtime(tmp_path) as runtime:
            command = runtime.flwr_run_command(run_config, num_supernodes=50, cpus_per_client=1, app_dir=REPO)
            done = subprocess.run(command, env=runtime.env, cwd=REPO, capture_output=True, text=True, timeout=600)
        if not ray_failed_to_start(done.stdout + done.stderr):
            break
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / SUMMARY_FILE).is_file(), done.stdout[-3000:]
    rows = read_jsonl(out / METRICS_FILE)
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[0]["nodes"] == 5 and rows[0]["clients"] == 100 and rows[0]["examples"] > 0  # 5 sites × 20 users
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["rounds"] == 2 and 0.0 <= summary["hr@10"] <= 1.0
    # 25 of the 50 nodes evaluated, 20 users each
    assert rows[1]["users-evaluated"] == 500
