"""Every model family through Flower: the cohort executor reproduces the round driver.

Two cohort nodes receive the same sampled users as the driver's two partitions
(``u mod 2``), train them with the same family calls and seeds, and the server combines
their replies with the same server step, so the metrics agree (to float rounding of the
replies' float32 means).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrec.core.config.run_config import RunConfig
from fedrec.core.federation.driver import run_federation
from fedrec.core.run_files import METRICS_FILE, read_jsonl
from fedrec.simulations.simulate import simulate

FAMILY_RUNS = {
    "sasrec": dict(model="sasrec", rounds=2, clients_per_round=30, lr=0.01, batch_size=8, negatives=1,
                   server_lr=10.0, dim=16, seq_max_len=20),
    "explicit-mf": dict(model="explicit-mf", dataset="synthetic", rounds=2, clients_per_round=40, dim=8, lr=0.02,
                        batch_size=32, weight_decay=0.05, local_epochs=2, server_lr=10.0),
    "item-knn": dict(model="item-knn", rounds=1, clients_per_round=1000, knn_max_items=30),
}


@pytest.mark.parametrize("model", sorted(FAMILY_RUNS))
def test_each_family_through_flower_matches_the_round_driver(model: str, tmp_path: Path,
                                                              no_leftover_processes: None) -> None:
    config = RunConfig(**FAMILY_RUNS[model], executor="cohort", cohort_nodes=2, eval_every=2, checkpoint_every=2)
    simulate(config, tmp_path / "run", show_progress=False, timeout_s=600)
    rows = read_jsonl(tmp_path / "run" / METRICS_FILE)
    driver = run_federation(config, partitions=2).rows
    assert [r["clients"] for r in rows] == [r["clients"] for r in driver]
    keys = ("rmse", "mae") if model == "explicit-mf" else ("hr@10", "ndcg@10", "full_hr@10")
    for key in keys:
        assert rows[-1][key] == pytest.approx(driver[-1][key], abs=1e-4), key
