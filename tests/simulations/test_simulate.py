"""End-to-end: a federated simulation on the synthetic data, resume, the central twin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedrec.core.config.run_config import RunConfig
from fedrec.core.run_files import METRICS_FILE, SUMMARY_FILE, read_jsonl
from fedrec.core.training.central import CentralConfig
from fedrec.core.training.implicit import TrainingConfig
from fedrec.simulations.central_twin import run_central
from fedrec.simulations.simulate import resume_config, simulate

pytestmark = pytest.mark.slow

ROUND_KEYS = {"round", "wall_seconds", "train_loss", "clients", "bytes_up", "bytes_down"}


def _small(rounds: int, **overrides: object) -> RunConfig:
    # eval on a fifth of the 1000 nodes keeps the test short; the final summary is still
    # computed by the same client code
    return RunConfig(rounds=rounds, clients_per_round=10, dim=8, eval_every=3, eval_fraction=0.2,
                     checkpoint_every=1, **overrides)


def test_three_round_simulation_writes_the_run_directory(tmp_path: Path, no_leftover_processes: None) -> None:
    out = tmp_path / "run"
    summary = simulate(_small(3), out, show_progress=False, timeout_s=600)
    rows = read_jsonl(out / METRICS_FILE)
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert all(ROUND_KEYS <= set(r) for r in rows)
    assert all(r["clients"] == 10 and r["bytes_up"] > 0 and r["bytes_down"] > 0 for r in rows)
    assert "hr@10" in rows[2] and "hr@10" not in rows[0]
    for key in ("hr@10", "ndcg@10", "itempop_hr@10", "itempop_ndcg@10", "rounds", "wall_seconds", "config"):
        assert key in summary
    assert summary["rounds"] == 3 and summary["config"]["model"] == "mf"
    assert json.loads((out / SUMMARY_FILE).read_text()) == summary
    assert (out / "curves.png").stat().st_size > 0 and (out / "model.npz").is_file()


def test_resume_continues_from_the_checkpoint(tmp_path: Path, no_leftover_processes: None) -> None:
    out = tmp_path / "run"
    simulate(_small(2), out, show_progress=False, timeout_s=600)
    with pytest.raises(FileExistsError):
        simulate(_small(2), out, show_progress=False)
    config = resume_config(out, {"rounds": 3})
    assert config.resume and config.rounds == 3
    summary = simulate(config, out, show_progress=False, timeout_s=600)
    rows = read_jsonl(out / METRICS_FILE)
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert summary["rounds"] == 3


def test_central_twin_writes_the_same_summary_format(tmp_path: Path) -> None:
    summary = run_central(CentralConfig(dataset="synthetic", epochs=4, dim=16, eval_every=2,
                                        training=TrainingConfig(lr=0.01, batch_size=256)), tmp_path / "central")
    for key in ("hr@10", "ndcg@10", "itempop_hr@10", "itempop_ndcg@10", "rounds", "wall_seconds", "config"):
        assert key in summary
    assert summary["hr@10"] > summary["itempop_hr@10"]
    assert len(read_jsonl(tmp_path / "central" / METRICS_FILE)) == 4


def test_cohort_executor_in_flower_matches_the_same_arithmetic_without_flower(
    tmp_path: Path, no_leftover_processes: None
) -> None:
    """Two cohort nodes, 50 sampled users a round: the Flower run's metrics equal the pure-torch
    loop's (same sampling, same per-user arithmetic), and the rows say who trained."""
    from fedrec.client.partition import split_for
    from fedrec.simulations.torch_loop import run_torch_loop

    config = RunConfig(rounds=2, clients_per_round=50, dim=8, eval_every=2, checkpoint_every=2,
                       executor="cohort", cohort_nodes=2)
    summary = simulate(config, tmp_path / "run", show_progress=False, timeout_s=600)
    rows = read_jsonl(tmp_path / "run" / METRICS_FILE)
    assert [(r["clients"], r["nodes"]) for r in rows] == [(50, 2), (50, 2)]
    assert rows[1]["users-evaluated"] == 1000 and "wall_seconds" in rows[0]
    floor = run_torch_loop(split_for(config), config)
    assert rows[0]["train_loss"] == pytest.approx(floor[0]["train_loss"], rel=1e-4)
    assert summary["hr@10"] == pytest.approx(floor[-1]["hr@10"], abs=0.002)
    assert summary["ndcg@10"] == pytest.approx(floor[-1]["ndcg@10"], abs=0.002)


def test_a_terminated_simulation_stops_everything_it_started(tmp_path: Path, no_leftover_processes: None,
                                                            live_runtime_processes) -> None:
    """SIGTERM to `fedrec simulate` mid-run: it exits with an error and leaves no process behind."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "fedrec.cli.main", "simulate", "--rounds", "50", "--clients-per-round", "10",
               "--dim", "8", "--quiet", "--out", str(out)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out / METRICS_FILE).exists():  # a round ran: all is up
        assert child.poll() is None, child.stdout.read() if child.stdout else ""
        time.sleep(0.5)
    assert (out / METRICS_FILE).exists(), "no round finished within 300 s"
    assert live_runtime_processes(), "the runtime's processes should be alive before the signal"
    child.send_signal(signal.SIGTERM)
    output, _ = child.communicate(timeout=120)
    assert child.returncode != 0
    assert "received signal" in output and "Traceback" not in output
