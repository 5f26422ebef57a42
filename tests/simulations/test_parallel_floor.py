"""The floor in plain processes computes what the one-process loop computes."""

from __future__ import annotations

import pytest

from fedrec.client.partition import split_for
from fedrec.core.config.run_config import RunConfig
from fedrec.simulations.parallel_floor import run_parallel_floor
from fedrec.simulations.torch_loop import run_torch_loop


def test_two_worker_processes_give_the_loop_s_losses_and_metrics() -> None:
    config = RunConfig(rounds=2, clients_per_round=60, dim=8, eval_every=2, executor="cohort")
    parallel = run_parallel_floor(config, partitions=2, evaluate=True)
    serial = run_torch_loop(split_for(config), config, partitions=2)
    assert [r["clients"] for r in parallel] == [60, 60]
    for a, b in zip(parallel, serial):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["train_seconds"] > 0
    assert parallel[-1]["hr@10"] == pytest.approx(serial[-1]["hr@10"], abs=1e-9)
    assert parallel[-1]["ndcg@10"] == pytest.approx(serial[-1]["ndcg@10"], abs=1e-6)
    assert "hr@10" not in parallel[0]
