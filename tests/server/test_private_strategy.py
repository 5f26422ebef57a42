"""The strategy and the server's privacy side: DP aggregation, clip checks, ledger rows, Poisson sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from fedrec.core.config.run_config import RunConfig
from fedrec.core.federation.aggregation import ServerOptimizer
from fedrec.core.privacy.accounting import epsilon
from fedrec.core.privacy.ledger import read_ledger
from fedrec.core.privacy.ledger_chain import verify_chain
from fedrec.core.privacy.mechanisms import poisson_sample
from fedrec.protocol.wire import (
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
    from fedrec.protocol.wire import DP_CLIP, DP_WITHIN_CLIP
    from fedrec.server.loop import round_config

    config = RunConfig(executor="per-client", dp="user-central", noise_multiplier=1.0, clip=1.0, clients_per_round=100,
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
    from fedrec.protocol.wire import SAMPLED_USERS
    from fedrec.server.loop import round_config

    central = RunConfig(dp="user-central", epsilon=8.0, executor="cohort")
    assert SAMPLED_USERS not in round_config(central, 1000, 1, "train")  # nodes sample their own users
    assert SAMPLED_USERS in round_config(RunConfig(executor="cohort"), 1000, 1, "train")


def test_private_setups_with_wrong_accounting_are_refused(tmp_path: Path) -> None:
    from fedrec.server.loop import _check_private_setup

    with pytest.raises(ValueError, match="restart from zero"):
        _check_private_setup(RunConfig(dp="record", epsilon=8.0), tmp_path, 3, 100, 100)
    with pytest.raises(ValueError, match="privacy.db"):
        _check_private_setup(RunConfig(executor="per-client", dp="user-central", epsilon=8.0), tmp_path, 3, 100, 100)
    with pytest.raises(ValueError, match="one node per user"):
        _check_private_setup(RunConfig(executor="per-client", dp="user-central", epsilon=8.0), tmp_path, 1, 10, 100)
    _check_private_setup(RunConfig(dp="user-central", epsilon=8.0, executor="cohort"), tmp_path, 1, 2, 100)


def test_payload_bytes_of_records_with_empty_lists() -> None:
    from fedrec.server.payload import record_bytes

    assert record_bytes(ConfigRecord({"users": [], "rate": 0.5})) > 0


# --- evaluation releases, ledger v2 fields, plan and signed heads ------------------------------

KEYS = ("hr@10", "ndcg@10", "full_hr@10", "full_ndcg@10")


def _eval_reply(sums: list[float], count: int, report: ConfigRecord | None = None, node: int = 7) -> Message:
    from fedrec.protocol.wire import USERS_EVALUATED

    content = RecordDict({METRICS: MetricRecord({**dict(zip(KEYS, sums)), USERS_EVALUATED: count})})
    if report is not None:
        content[PRIVACY] = report
    message = Message(content=content, dst_node_id=0, message_type=MessageType.EVALUATE)
    message.metadata.__dict__["_src_node_id"] = node
    return message


def _eval_report(users: list[int], refused: list[int], sigma: float, eps: list[float]) -> ConfigRecord:
    from fedrec.protocol.wire import PRIVACY_RELEASE

    return ConfigRecord({PRIVACY_RELEASE: "evaluate", PRIVACY_USERS: users, PRIVACY_REFUSED: refused,
                         PRIVACY_NOISE: [sigma] * len(users), PRIVACY_RATE: [1.0] * len(users),
                         PRIVACY_STEPS: [1 - r for r in refused], PRIVACY_EPSILON: eps})


def test_user_central_evaluation_noises_the_sum_and_divides_by_the_users_asked(tmp_path: Path) -> None:
    from fedrec.core.privacy import plan
    from fedrec.protocol.wire import USERS_EVALUATED

    config = RunConfig(dp="user-central", noise_multiplier=1.0, eval_noise_multiplier=1e-7, clients_per_round=10)
    strategy = _strategy(config, tmp_path, n_units=100)
    strategy.eval_asked = 4  # two of the four users asked did not answer: still divided by 4
    released = strategy.aggregate_evaluate(5, [_eval_reply([1, 1, 0.5, 0.5], 1), _eval_reply([1, 0, 0, 0], 1, node=8)])
    assert [released[k] for k in KEYS] == pytest.approx([0.5, 0.25, 0.125, 0.125], abs=1e-5)
    assert released[USERS_EVALUATED] == 2  # for server_internal.jsonl, not for metrics.jsonl
    [row] = read_ledger(tmp_path / "privacy.db")
    assert (row.who, row.release, row.noise_multiplier, row.sample_rate, row.steps, row.sensitivity,
            row.relation) == ("server", "evaluate", 1e-7, 1.0, 1, 2.0, "add-remove")
    assert strategy.privacy.history == [plan.evaluation_step(config, 100)]
    # a malformed reply (a sum beyond its count) is dropped, not averaged in
    dropped = strategy.aggregate_evaluate(6, [_eval_reply([3, 0, 0, 0], 1)])
    assert dropped[USERS_EVALUATED] == 0 and dropped["hr@10"] == pytest.approx(0.0, abs=1e-5)
    strategy.privacy.close()


def test_user_central_evaluation_noise_has_the_planned_std(tmp_path: Path) -> None:
    from fedrec.core.privacy.evaluation import central_release
    from fedrec.core.privacy.secure_random import SecureRandom

    config = RunConfig(dp="user-central", noise_multiplier=1.0, eval_noise_multiplier=0.5)
    generator = SecureRandom(key=bytes(32))
    draws = np.array([[central_release(config, np.zeros(4), 1, generator)[k] for k in KEYS] for _ in range(4000)])
    assert draws.std() == pytest.approx(0.5 * 2.0, rel=0.05)  # σ_e·√K, K = 4


def test_a_round_whose_evaluation_would_exceed_the_servers_budget_is_not_evaluated(tmp_path: Path) -> None:
    config = RunConfig(dp="user-central", noise_multiplier=1.0, eval_noise_multiplier=1.0, epsilon=6.0,
                       clients_per_round=100)
    privacy = ServerPrivacy.open(config, 100, tmp_path, "run-1")  # q = 1: every round spends as much
    assert privacy.evaluation_allowed()
    privacy.history.append((1.0, 1.0, 2))  # with the evaluation, three steps of σ = 1: ε ≈ 9.1 > 6
    assert not privacy.evaluation_allowed()
    privacy.close()


def test_client_accounted_evaluation_averages_noised_sums_and_ledgers_each_user(tmp_path: Path) -> None:
    from fedrec.protocol.wire import USERS_EVALUATED

    config = RunConfig(dp="user-local", noise_multiplier=2.0, epsilon=8.0)
    strategy = _strategy(config, tmp_path)
    replies = [_eval_reply([0.5, 0.5, 0.5, 0.5], 1, _eval_report([1], [0], 9.0, [1.5])),
               _eval_reply([2.5, 0.5, 1.5, 0.5], 2, _eval_report([2, 3, 4], [0, 0, 1], 9.0, [1.5, 1.6, 7.9]),
                           node=8),
               _eval_reply([9, 9, 9, 9], 2, _eval_report([5], [0], 9.0, [1.0]), node=9),  # count disagrees
               _eval_reply([9, 9, 9, 9], 1, node=10)]  # no report: dropped
    strategy.eval_asked = 5
    released = strategy.aggregate_evaluate(3, replies)
    assert [released[k] for k in KEYS] == pytest.approx([1.0, 1 / 3, 2 / 3, 1 / 3])
    assert released[USERS_EVALUATED] == 3
    rows = read_ledger(tmp_path / "privacy.db")
    assert [(r.who, r.release, r.noise_multiplier, r.sensitivity) for r in rows] == [
        ("client:1", "evaluate", 9.0, 2.0), ("client:2", "evaluate", 9.0, 2.0), ("client:3", "evaluate", 9.0, 2.0)]
    assert strategy.privacy.round_fields()["dp_refused"] == 1
    strategy.privacy.close()


def test_train_rows_state_the_relation_and_sensitivity_of_the_mode(tmp_path: Path) -> None:
    for mode, factor in (("record", 1.0), ("user-local", 2.0)):
        run_dir = tmp_path / mode
        run_dir.mkdir()
        privacy = ServerPrivacy.open(RunConfig(dp=mode, noise_multiplier=1.0, clip=0.5), 100, run_dir, "run-1")
        privacy.record_round(1, [_reply(1.0, 1, _report([5], [0], [0.5]))])
        [row] = read_ledger(run_dir / "privacy.db")
        assert (row.release, row.sensitivity, row.relation) == (
            "train", 0.5 * factor, "replace-one" if mode == "user-local" else "add-remove")
        privacy.close()


def test_the_plan_is_written_at_the_start_and_every_round_signs_the_head(tmp_path: Path) -> None:
    import hashlib
    import json

    from fedrec.core.privacy import plan
    from fedrec.core.privacy.ledger import read_heads
    from fedrec.core.privacy.signing import read_public_key, verify_ed25519

    config = RunConfig(dp="user-central", noise_multiplier=1.0, clients_per_round=10, rounds=2)
    (tmp_path / "run_config.json").write_text(json.dumps(config.to_user_config()))
    privacy = ServerPrivacy.open(config, 100, tmp_path, "run-1")
    document = json.loads((tmp_path / "privacy_plan.json").read_text())
    assert document == json.loads(json.dumps({**plan.privacy_plan(config, 100), "run_id": "run-1"}))
    for server_round in (1, 2):
        privacy.record_round(server_round, [])
        privacy.sign_round(server_round, final=server_round == 2)
    privacy.close()
    heads = read_heads(tmp_path / "privacy.db")
    assert [(h.round, h.rows, h.final) for h in heads] == [(1, 1, False), (2, 2, True)]
    claims = heads[-1].claims()
    assert claims["plan_sha256"] == hashlib.sha256((tmp_path / "privacy_plan.json").read_bytes()).hexdigest()
    assert claims["config_sha256"] == hashlib.sha256((tmp_path / "run_config.json").read_bytes()).hexdigest()
    public = read_public_key(tmp_path / "ledger-signing.pub")
    assert all(verify_ed25519(public, h.statement.encode("ascii"), h.signature) for h in heads)
    # a resumed run must find the same plan
    resumed = RunConfig(**{**config.__dict__, "resume": True})
    ServerPrivacy.open(resumed, 100, tmp_path, "run-1").close()
    with pytest.raises(ValueError, match="privacy plan"):
        ServerPrivacy.open(RunConfig(**{**resumed.__dict__, "noise_multiplier": 2.0}), 100, tmp_path, "run-1")
