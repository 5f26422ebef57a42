"""On ML-100K, 3 rounds of all 943 users: the cohort executor ends where per-client does."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fedrec.client.partition import split_for
from fedrec.core.config.run_config import RunConfig
from fedrec.simulations.torch_loop import run_torch_loop

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"

pytestmark = pytest.mark.slow


def test_three_rounds_of_every_user_end_with_the_same_hr_and_loss() -> None:
    if not (SHARED_DATA / "ml-100k" / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not available at {SHARED_DATA / 'ml-100k'}")
    config = RunConfig(dataset="ml-100k", data_dir=str(SHARED_DATA), model="mf", rounds=3, clients_per_round=943,
                       eval_every=3, client_optimizer="adam", lr=0.05, local_epochs=1)
    split = split_for(config)
    per_client = run_torch_loop(split, replace(config, executor="per-client"))
    cohort = run_torch_loop(split, replace(config, executor="cohort"), partitions=2)
    assert [r["clients"] for r in cohort] == [943, 943, 943]
    for a, b in zip(per_client, cohort):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    assert abs(cohort[-1]["hr@10"] - per_client[-1]["hr@10"]) <= 0.01
    assert abs(cohort[-1]["ndcg@10"] - per_client[-1]["ndcg@10"]) <= 0.01
    assert per_client[-1]["hr@10"] > 0.45  # it learned: ItemPop is 0.397 on this split
