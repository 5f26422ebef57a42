"""The ClientApp under DP, in-process: accountant state across rounds, refusals, replies."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from fedrec.client import app as client_app
from fedrec.core.config.run_config import RunConfig
from fedrec.core.privacy.mechanisms import update_norm
from fedrec.protocol.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    NODE_SECONDS,
    NUM_EXAMPLES,
    PRIVACY,
    PRIVACY_EPSILON,
    PRIVACY_REFUSED,
    PRIVACY_RELEASE,
    PRIVACY_STEPS,
    SERVER_ROUND,
    TRAIN_LOSS,
    USERS_EVALUATED,
    USERS_RECONSTRUCTED,
)
from fedrec.server.loop import initial_global_arrays
from fedrec.server.strategy.fedopt_updates import arrays_to_numpy, numpy_to_arrays

N_ITEMS = 500  # synthetic catalogue


def _context(config: RunConfig, partition: int = 3) -> Context:
    return Context(run_id=1, node_id=partition + 1, node_config={"partition-id": partition, "num-partitions": 1000},
                   state=RecordDict(), run_config=config.to_user_config())


def _train(config: RunConfig, context: Context, server_round: int) -> Message:
    arrays = initial_global_arrays(config, N_ITEMS)
    content = RecordDict({ARRAYS: numpy_to_arrays(arrays), CONFIG: ConfigRecord({SERVER_ROUND: server_round})})
    return client_app.train(Message(content=content, dst_node_id=1, message_type=MessageType.TRAIN), context)


def _evaluate(config: RunConfig, context: Context, server_round: int = 1) -> Message:
    arrays = initial_global_arrays(config, N_ITEMS)
    content = RecordDict({ARRAYS: numpy_to_arrays(arrays), CONFIG: ConfigRecord({SERVER_ROUND: server_round})})
    return client_app.evaluate(Message(content=content, dst_node_id=1, message_type=MessageType.EVALUATE), context)


def test_user_local_epsilon_accumulates_across_rounds_and_the_budget_refuses() -> None:
    # noise 4·C on a replace-one release (sensitivity 2C): accounted σ = 2; budget 3.8 at δ=1e-5
    # allows two releases (ε 2.17, 3.19) but not a third (4.01)
    config = RunConfig(executor="per-client", dim=8, dp="user-local", noise_multiplier=4.0, epsilon=3.8, clip=0.5)
    context = _context(config)
    spent = []
    for server_round in (1, 2, 3):
        reply = _train(config, context, server_round)
        report = reply.content.config_records[PRIVACY]
        spent.append((report[PRIVACY_REFUSED][0], report[PRIVACY_EPSILON][0]))
    assert spent[0][0] == 0 and spent[1][0] == 0 and spent[1][1] > spent[0][1] > 0
    assert spent[2] == (1, spent[1][1])  # refused, ε unchanged
    refused = reply.content
    assert refused.metric_records[METRICS][NUM_EXAMPLES] == 0
    assert all(np.count_nonzero(v) == 0 for v in arrays_to_numpy(refused.array_records[ARRAYS]).values())


def test_user_local_reply_is_noised_densely_and_reveals_no_counts_or_loss() -> None:
    config = RunConfig(executor="per-client", dim=8, dp="user-local", noise_multiplier=1.0, clip=0.5)
    reply = _train(config, _context(config), 1)
    update = arrays_to_numpy(reply.content.array_records[ARRAYS])
    assert all(np.count_nonzero(v) == v.size for v in update.values())  # every item row noised
    assert update_norm(update) > 0.5  # noise σC per entry on ~4500 entries, far beyond C
    metrics = reply.content.metric_records[METRICS]
    assert metrics[NUM_EXAMPLES] == 1 and TRAIN_LOSS not in metrics


def test_user_central_reply_is_clipped_and_keeps_no_client_accountant() -> None:
    config = RunConfig(executor="per-client", dim=8, dp="user-central", epsilon=8.0, clip=0.01)
    context = _context(config)
    reply = _train(config, context, 1)
    update = arrays_to_numpy(reply.content.array_records[ARRAYS])
    assert update_norm(update) <= 0.01 * (1 + 1e-5)
    assert reply.content.config_records[PRIVACY][PRIVACY_STEPS] == [0]
    assert not any(key.startswith("fedrec.privacy.") for key in context.state.keys())


@pytest.mark.parametrize("mode", ["record", "user-local"])
def test_the_accountant_state_lives_in_the_node_state(mode: str) -> None:
    config = RunConfig(executor="per-client", dim=8, dp=mode, noise_multiplier=1.5, batch_size=8)
    context = _context(config)
    first = _train(config, context, 1).content.config_records[PRIVACY][PRIVACY_EPSILON][0]
    second = _train(config, context, 2).content.config_records[PRIVACY][PRIVACY_EPSILON][0]
    assert second > first > 0  # never restarts from zero
    fresh = _train(config, _context(config), 2).content.config_records[PRIVACY][PRIVACY_EPSILON][0]
    assert fresh == pytest.approx(first)  # a node without state starts where the first round did


def test_cohort_user_central_node_samples_its_own_users_by_poisson() -> None:
    from fedrec.protocol.wire import USERS_TRAINED

    config = RunConfig(dim=8, dp="user-central", epsilon=8.0, executor="cohort", clients_per_round=250)
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 2},
                      state=RecordDict(), run_config=config.to_user_config())
    trained = [_train(config, context, r).content.metric_records[METRICS][USERS_TRAINED] for r in (1, 2, 3)]
    # the node holds 500 users; q = 250/1000: about 125 a round, a different number each time
    assert all(80 < n < 170 for n in trained) and len(set(trained)) > 1


@pytest.mark.parametrize("mode", ["record", "user-local"])
def test_a_client_accounted_evaluation_is_noised_accounted_and_shares_the_training_history(mode: str) -> None:
    from fedrec.client.privacy_state import PrivacyHistoryStore
    from fedrec.core.privacy import plan
    from fedrec.core.privacy.accounting import compact

    config = RunConfig(executor="per-client", dim=8, dp=mode, epsilon=8.0, rounds=10, eval_every=5, batch_size=8)
    context = _context(config)
    _train(config, context, 1)
    trained = PrivacyHistoryStore(context.state).load(3)
    reply = _evaluate(config, context)
    metrics = reply.content.metric_records[METRICS]
    keys = plan.private_metric_keys(config.eval_k)
    assert set(metrics) == {*keys, USERS_EVALUATED} and metrics[USERS_EVALUATED] == 1
    assert any(not 0 <= metrics[k] <= 1 for k in keys)  # noise std σ_e·√K ≈ 20: out of [0, 1]
    report = reply.content.config_records[PRIVACY]
    assert report[PRIVACY_RELEASE] == "evaluate" and report[PRIVACY_REFUSED] == [0]
    history = PrivacyHistoryStore(context.state).load(3)
    assert compact(history) == compact([*trained, plan.evaluation_step(config, 0)])
    assert report[PRIVACY_EPSILON][0] > _train(config, _context(config), 1).content.config_records[
        PRIVACY][PRIVACY_EPSILON][0]  # the evaluation counts against the same budget
    assert _train(config, context, 2).content.config_records[PRIVACY][PRIVACY_RELEASE] == "train"


def test_a_user_central_evaluation_replies_the_exact_clamped_sum_for_the_server_to_noise() -> None:
    from fedrec.core.privacy import plan

    config = RunConfig(executor="per-client", dim=8, dp="user-central", epsilon=8.0)
    off = RunConfig(executor="per-client", dim=8)
    reply = _evaluate(config, _context(config)).content
    exact = _evaluate(off, _context(off)).content.metric_records[METRICS]
    metrics = reply.metric_records[METRICS]
    keys = plan.private_metric_keys(config.eval_k)
    assert set(metrics) == {*keys, USERS_EVALUATED} and metrics[USERS_EVALUATED] == 1
    assert all(metrics[k] == pytest.approx(exact[k]) for k in keys)
    assert PRIVACY not in reply.config_records  # the server accounts


def test_dp_replies_carry_no_compute_time_reconstruction_count_or_loss() -> None:
    for mode in ("record", "user-local", "user-central"):
        config = RunConfig(executor="per-client", dim=8, dp=mode, epsilon=8.0, batch_size=8)
        for reply in (_train(config, _context(config), 1), _evaluate(config, _context(config))):
            metrics = reply.content.metric_records[METRICS]
            assert not {NODE_SECONDS, TRAIN_LOSS, USERS_RECONSTRUCTED} & set(metrics), (mode, dict(metrics))


@pytest.mark.parametrize("handler", ["train", "evaluate"])
def test_user_central_per_client_refuses_a_simulated_node_holding_several_users(handler: str) -> None:
    """(4) Sampling a node samples its users together: sensitivity w·C, not C. Refused."""
    config = RunConfig(executor="per-client", dim=8, dp="user-central", epsilon=8.0)
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 10},
                      state=RecordDict(), run_config=config.to_user_config())
    with pytest.raises(ValueError, match="holds 100 users"):
        (_train(config, context, 1) if handler == "train" else _evaluate(config, context))
    cohort = RunConfig(dim=8, dp="user-central", epsilon=8.0, executor="cohort")  # clips each user: allowed
    _train(cohort, Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 10},
                           state=RecordDict(), run_config=cohort.to_user_config()), 1)
