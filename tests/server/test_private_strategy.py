"""The strategy and the server's privacy side: DP aggregation, clip checks, ledger rows, Poisson sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from fedrec.core.aggregation import ServerOptimizer
from fedrec.core.privacy.accounting import epsilon
from fedrec.core.privacy.ledger import read_ledger, verify_chain
from fedrec.core.run_config import RunConfig
from fedrec.core.wire import (
    ARRAYS,
    METRICS,
    NUM_EXAMPLES,
    PRIVACY,
    PRIVACY_EPSILON,
    PRIVACY_NOISE,
    PRIVACY_RATE,
    PRIVACY_REFUSED,
    PRIVACY_STEPS,
    PRIVACY_USERS,
)
from fedrec.core.privacy.mechanisms import poisson_sample
from fedrec.server.privacy import ServerPrivacy
from fedrec.server.strategy.fedopt_updates import FedOptOnUpdates, arrays_to_numpy, numpy_to_arrays

GLOBAL = {"item_embedding.weight": np.zeros((50, 4), dtype=np.float32),
          "item_bias.weight": np.zeros((50, 1), dtype=np.float32)}


def _report(users: list[int], refused: list[int], eps: list[float]) -> ConfigRecord:
    return ConfigRecord({PRIVACY_USERS: users, PRIVACY_REFUSED: refused, PRIVACY_NOISE: [1.0] * len(users),
                         PRIVACY_RATE: [0.5] * len(users), PRIVACY_STEPS: [4 * (1 - r) for r in refused],
                         PRIVACY_EPSILON: eps})


def _reply(value: float, weight: int, report: ConfigRecord | None = None, node: int = 7) -> Message:
    update = {k: np.full_like(v, value) for k, v in GLOBAL.items()}
    content = RecordDict({ARRAYS: numpy_to_arrays(update), METRICS: MetricRecord({NUM_EXAMPLES: weight})})
    if report is not None:
        content[PRIVACY] = report
    message = Message(content=content, dst_node_id=0, message_type=MessageType.TRAIN)
    message.metadata.__dict__["_src_node_id"] = node
    return message


def _strategy(config: RunConfig, tmp_path: Path, n_units: int = 100) -> FedOptOnUpdates:
    privacy = ServerPrivacy.open(config, n_units, tmp_path, "run-1")
    strategy = FedOptOnUpdates(ServerOptimizer("fedavg", 1.0), privacy, min_available_nodes=1, min_train_nodes=1)
    strategy._current = {k: v.copy() for k, v in GLOBAL.items()}
    return strategy


def test_user_local_mean_weighs_users_and_drops_replies_without_a_report(tmp_path: Path) -> None:
    strategy = _strategy(RunConfig(dp="user-local", noise_multiplier=1.0), tmp_path)
    replies = [_reply(1.0, 1, _report([1], [0], [0.5])), _reply(4.0, 2, _report([2, 3], [0, 0], [0.5, 0.7])),
               _reply(100.0, 1)]  # no privacy report: dropped
    arrays, _ = strategy.aggregate_train(1, replies)
    assert np.allclose(arrays_to_numpy(arrays)["item_bias.weight"], (1.0 + 2 * 4.0) / 3)


def test_a_report_that_disagrees_with_the_weight_is_dropped(tmp_path: Path) -> None:
    strategy = _strategy(RunConfig(dp="record", noise_multiplier=1.0), tmp_path)
    arrays, _ = strategy.aggregate_train(1, [_reply(1.0, 1, _report([1], [0], [0.5])),
                                             _reply(9.0, 3, _report([2], [0], [0.5]))])
    assert np.allclose(arrays_to_numpy(arrays)["item_bias.weight"], 1.0)


def test_user_central_drops_unclipped_updates_and_noises_the_sum(tmp_path: Path) -> None:
    config = RunConfig(dp="user-central", noise_multiplier=1e-9, clip=1.0, clients_per_round=4)
    strategy = _strategy(config, tmp_path, n_units=8)  # q = 0.5, expected 4 users
    small = 0.5 / np.sqrt(250)  # ‖update‖ = 0.5 over 250 entries
    arrays, _ = strategy.aggregate_train(1, [_reply(small, 1), _reply(small, 1), _reply(1.0, 1)])  # last: ‖·‖≈15.8
    np.testing.assert_allclose(arrays_to_numpy(arrays)["item_bias.weight"], 2 * small / 4, rtol=1e-4)


def test_ledger_rows_for_trained_users_and_counted_refusals(tmp_path: Path) -> None:
    config = RunConfig(dp="record", noise_multiplier=1.0, epsilon=8.0)
    privacy = ServerPrivacy.open(config, 100, tmp_path, "run-1")
    fields = privacy.record_round(1, [_reply(1.0, 1, _report([5, 6], [0, 1], [0.5, 0.9]))])
    assert fields["dp_refused"] == 1 and fields["ledger_rows"] == 1
    rows = read_ledger(tmp_path / "privacy.db")
    assert [(r.who, r.round, r.epsilon, r.budget) for r in rows] == [("client:5", 1, 0.5, 8.0)]
    assert fields["ledger_head"] == rows[-1].hash and verify_chain(rows) == []
    privacy.close()


def test_the_server_accountant_grows_per_round_and_resumes_from_the_ledger(tmp_path: Path) -> None:
    config = RunConfig(dp="user-central", noise_multiplier=1.0, clients_per_round=10)
    privacy = ServerPrivacy.open(config, 100, tmp_path, "run-1")
    eps = [privacy.record_round(r, [])["epsilon_max"] for r in (1, 2, 3)]
    privacy.close()
    assert eps[0] < eps[1] < eps[2]
    assert eps[2] == pytest.approx(epsilon([(1.0, 0.1, 3)], 1e-5, "rdp"))
    resumed = ServerPrivacy.open(RunConfig(**{**config.__dict__, "resume": True}), 100, tmp_path, "run-1")
    assert resumed.record_round(4, [])["epsilon_max"] == pytest.approx(epsilon([(1.0, 0.1, 4)], 1e-5, "rdp"))
    resumed.close()


def test_a_budget_stops_the_server_before_it_overshoots(tmp_path: Path) -> None:
    config = RunConfig(dp="user-central", noise_multiplier=1.0, epsilon=3.0, clients_per_round=10)
    privacy = ServerPrivacy.open(config, 100, tmp_path, "run-1")
    rounds = 0
    while privacy.central_round_allowed():
        privacy.record_round(rounds + 1, [])
        rounds += 1
    assert rounds >= 2 and epsilon(privacy.history, 1e-5, "rdp") <= 3.0
    assert epsilon([*privacy.history, (1.0, 0.1, 1)], 1e-5, "rdp") > 3.0
    privacy.close()


def test_poisson_sampling_includes_each_candidate_independently() -> None:
    counts = [len(poisson_sample(list(range(1000)), 0.1)) for _ in range(50)]
    assert 80 < np.mean(counts) < 120 and len(set(counts)) > 5  # random size, mean q·n


def test_adaptive_clipping_moves_c_and_the_ledger_keeps_each_rounds_clip(tmp_path: Path) -> None:
    from fedrec.core.wire import DP_CLIP, DP_WITHIN_CLIP
    from fedrec.server.loop import round_config

    config = RunConfig(dp="user-central", noise_multiplier=1.0, clip=1.0, clients_per_round=100,
                       adaptive_clip=True, clip_quantile=0.5)
    strategy = _strategy(config, tmp_path, n_units=1000)
    privacy = strategy.privacy
    privacy.begin_round()
    assert round_config(config, None, 1, "train", privacy)[DP_CLIP] == 1.0
    replies = []
    for node in range(100):  # every user clipped: ‖Δ‖ > C, so C must grow
        reply = _reply(0.5 / np.sqrt(250), 1, node=node)
        reply.content.metric_records[METRICS][DP_WITHIN_CLIP] = 0
        replies.append(reply)
    strategy.aggregate_train(1, replies)
    assert privacy.clip > 1.0
    privacy.record_round(1, replies)
    privacy.begin_round()
    privacy.record_round(2, [])
    rows = read_ledger(tmp_path / "privacy.db")
    assert rows[0].clip_norm == 1.0 and rows[1].clip_norm == pytest.approx(privacy.clip)
    privacy.close()


def test_cohort_user_central_sends_no_list_of_sampled_users() -> None:
    from fedrec.core.wire import SAMPLED_USERS
    from fedrec.server.loop import round_config

    central = RunConfig(dp="user-central", epsilon=8.0, executor="cohort")
    assert SAMPLED_USERS not in round_config(central, 1000, 1, "train")  # nodes sample their own users
    assert SAMPLED_USERS in round_config(RunConfig(executor="cohort"), 1000, 1, "train")


def test_private_setups_with_wrong_accounting_are_refused(tmp_path: Path) -> None:
    from fedrec.server.loop import _check_private_setup

    with pytest.raises(ValueError, match="restart from zero"):
        _check_private_setup(RunConfig(dp="record", epsilon=8.0), tmp_path, 3, 100, 100)
    with pytest.raises(ValueError, match="privacy.db"):
        _check_private_setup(RunConfig(dp="user-central", epsilon=8.0), tmp_path, 3, 100, 100)
    with pytest.raises(ValueError, match="one node per user"):
        _check_private_setup(RunConfig(dp="user-central", epsilon=8.0), tmp_path, 1, 10, 100)
    _check_private_setup(RunConfig(dp="user-central", epsilon=8.0, executor="cohort"), tmp_path, 1, 2, 100)


def test_payload_bytes_of_records_with_empty_lists() -> None:
    from fedrec.server.loop import _record_bytes

    assert _record_bytes(ConfigRecord({"users": [], "rate": 0.5})) > 0
