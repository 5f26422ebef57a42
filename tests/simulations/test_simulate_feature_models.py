"""End-to-end: a feature model (hybrid) through Flower, against the same arithmetic without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrec.core.config.run_config import RunConfig
from fedrec.core.run_files import METRICS_FILE, read_jsonl
from fedrec.simulations.simulate import simulate

pytestmark = pytest.mark.slow


def test_hybrid_in_flower_matches_the_torch_loop(tmp_path: Path, no_leftover_processes: None) -> None:
    """The server sizes W from the dataset's features, the nodes build the same model: the
    Flower run's loss and metrics equal the pure-torch loop's (two cohort nodes, 50 users a round)."""
    from fedrec.client.partition import split_for
    from fedrec.simulations.torch_loop import run_torch_loop

    config = RunConfig(model="hybrid", rounds=2, clients_per_round=50, dim=8, eval_every=2, checkpoint_every=2,
                       executor="cohort", cohort_nodes=2)
    summary = simulate(config, tmp_path / "run", show_progress=False, timeout_s=600)
    rows = read_jsonl(tmp_path / "run" / METRICS_FILE)
    assert [(r["clients"], r["nodes"]) for r in rows] == [(50, 2), (50, 2)]
    assert summary["config"]["model"] == "hybrid"
    floor = run_torch_loop(split_for(config), config)
    assert rows[0]["train_loss"] == pytest.approx(floor[0]["train_loss"], rel=1e-4)
    assert summary["hr@10"] == pytest.approx(floor[-1]["hr@10"], abs=0.002)
    assert summary["ndcg@10"] == pytest.approx(floor[-1]["ndcg@10"], abs=0.002)
