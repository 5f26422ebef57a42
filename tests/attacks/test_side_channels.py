"""Side channels under DP (adversarial review, finding 5), in-process (no Flower processes).

What the DP mechanisms cover is the noised update and the noised evaluation metrics. A
reply's compute time grows with the user's record count; ``metrics.jsonl`` (the file a
run shares) recorded the realised Poisson sample (``clients``, ``examples``, ``nodes``,
``bytes_up``) that user-central's division by the *expected* count is there to hide; and
the un-noised evaluation means. Under DP those must stay on the trusted server
(``server_internal.jsonl``) or not exist at all. Each test also runs ``--dp off`` (or the
old behaviour) to show what it would catch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from inprocess_grid import InProcessGrid

from fedrec.client import app as client_app
from fedrec.core.config.run_config import RunConfig
from fedrec.core.privacy.plan import private_metric_keys
from fedrec.core.run_files import METRICS_FILE, read_jsonl
from fedrec.protocol.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    NODE_SECONDS,
    NUM_EXAMPLES,
    SERVER_ROUND,
    TRAIN_LOSS,
    USERS_EVALUATED,
    USERS_RECONSTRUCTED,
)
from fedrec.server.loop import INTERNAL_FILE, initial_global_arrays, run_rounds
from fedrec.server.strategy.fedopt_updates import numpy_to_arrays

N_ITEMS, N_USERS = 500, 1000  # the synthetic dataset
OPERATIONAL = ("clients", "nodes", "examples", "node_seconds_max", "train_loss", "bytes_up", "bytes_down",
               "train_seconds", "wall_seconds", USERS_EVALUATED)
SHARED = {"round", "ledger_rows", "ledger_head", "dp_refused", "epsilon_max", "skipped"}


def _run(tmp_path: Path, **options: object) -> tuple[list[dict], list[dict], InProcessGrid]:
    config = RunConfig(model="mf", dim=8, rounds=2, eval_every=1, clients_per_round=4, eval_fraction=0.004,
                       batch_size=8, **options)
    n_nodes = N_USERS if config.executor == "per-client" else 2
    grid = InProcessGrid(config, list(range(1, n_nodes + 1)),
                         lambda node: {"partition-id": node - 1, "num-partitions": n_nodes})
    run_dir = tmp_path / "run"
    run_rounds(grid, config, run_dir, N_ITEMS, N_USERS, run_id="side-channels")  # type: ignore[arg-type]
    return read_jsonl(run_dir / METRICS_FILE), read_jsonl(run_dir / INTERNAL_FILE), grid


DP_RUNS = {
    "user-local": {"dp": "user-local", "epsilon": 8.0},
    "record": {"dp": "record", "epsilon": 8.0},
    "user-central-cohort": {"dp": "user-central", "epsilon": 8.0, "executor": "cohort", "clip": 0.5},
}


@pytest.mark.parametrize("run", sorted(DP_RUNS))
def test_dp_metrics_rows_hold_only_covered_numbers_and_the_rest_stays_internal(tmp_path: Path, run: str) -> None:
    shared, internal, _ = _run(tmp_path, **DP_RUNS[run])
    private = set(private_metric_keys(10))
    assert [r["round"] for r in shared] == [1, 2] == [r["round"] for r in internal]
    for row in shared:
        assert set(row) <= SHARED | private, sorted(set(row) - SHARED - private)
        assert not set(row) & set(OPERATIONAL)  # no realised sample size, no timing
        assert private <= set(row)  # every round evaluates here, noised
    for row in internal:
        assert {"clients", "nodes", "examples", "bytes_up", "wall_seconds"} <= set(row)
        assert not private & set(row)


def test_without_dp_metrics_rows_keep_every_number(tmp_path: Path) -> None:
    """What the DP test would catch: the shared file of a --dp off run has all of them."""
    shared, internal, _ = _run(tmp_path)
    assert internal == []
    for row in shared:
        assert set(OPERATIONAL) <= set(row) and "full_recall@10" in row


@pytest.mark.parametrize("mode", ["off", "record", "user-local", "user-central"])
def test_dp_replies_carry_no_timing_loss_or_reconstruction_count(mode: str) -> None:
    config = RunConfig(model="mf", dim=8, dp=mode, epsilon=8.0 if mode != "off" else 0.0, batch_size=8,
                       reconstruct_epochs=1)
    context = Context(run_id=1, node_id=4, node_config={"partition-id": 3, "num-partitions": 1000},
                      state=RecordDict(), run_config=config.to_user_config())
    arrays = numpy_to_arrays(initial_global_arrays(config, N_ITEMS))
    replies = []
    for kind, handler in ((MessageType.EVALUATE, client_app.evaluate), (MessageType.TRAIN, client_app.train)):
        content = RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord({SERVER_ROUND: 1})})
        replies.append(handler(Message(content=content, dst_node_id=1, message_type=kind), context))
    evaluate_keys = set(replies[0].content.metric_records[METRICS])
    train_keys = set(replies[1].content.metric_records[METRICS])
    if mode == "off":  # today's behaviour: the numbers are there
        assert {NODE_SECONDS, TRAIN_LOSS} <= train_keys and USERS_RECONSTRUCTED in evaluate_keys
        return
    assert not {NODE_SECONDS, TRAIN_LOSS, USERS_RECONSTRUCTED} & (train_keys | evaluate_keys)
    assert evaluate_keys == {*private_metric_keys(10), USERS_EVALUATED}  # nothing else derived from data
    assert not replies[0].content.array_records


def test_a_dp_run_replies_without_timings_end_to_end(tmp_path: Path) -> None:
    _, _, grid = _run(tmp_path, dp="user-local", epsilon=8.0)
    assert grid.sent and all(NODE_SECONDS not in r.content.metric_records[METRICS] for r in grid.sent)
    assert all(USERS_RECONSTRUCTED not in r.content.metric_records[METRICS] for r in grid.sent)
    evaluations = [r for r in grid.sent if NUM_EXAMPLES not in r.content.metric_records[METRICS]]
    assert evaluations and all(not r.content.array_records for r in evaluations)


def test_a_dp_summary_holds_only_noised_metrics_rounds_and_config() -> None:
    from fedrec.core.run_files import build_summary
    from fedrec.server.app import dp_summary

    rows = [{"round": 1, "hr@10": 0.3, "ndcg@10": 0.2, "full_hr@10": 0.1, "full_ndcg@10": 0.05,
             "ledger_rows": 3, "ledger_head": "0" * 64, "dp_refused": 0, "epsilon_max": 1.0}]
    summary = dp_summary(build_summary(rows, 10, None, {"dp": "user-local"}, 12.5), 10)
    assert set(summary) == {*private_metric_keys(10), "rounds", "evaluated_at", "config"}
    assert "wall_seconds" in build_summary(rows, 10, None, {}, 12.5)  # what dp_summary removes
    assert np.isfinite(summary["hr@10"])
