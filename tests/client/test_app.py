"""The ClientApp called in-process: replies carry the global part only."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from fedrec.client import app as client_app
from fedrec.client.model_arrays import global_only
from fedrec.client.state import UserVectorStore
from fedrec.core.config.run_config import RunConfig
from fedrec.core.models import FEATURE_MODELS, MODELS
from fedrec.core.models.run_model import build_run_model
from fedrec.protocol.wire import (
    ARRAYS,
    CATALOGUE,
    CONFIG,
    METRICS,
    NODE_DATA_FILE,
    NODE_STATE_DIR,
    NUM_EXAMPLES,
    SERVER_ROUND,
    USERS_RECONSTRUCTED,
)
from fedrec.server.loop import initial_global_arrays
from fedrec.server.strategy.fedopt_updates import numpy_to_arrays

N_ITEMS = 500  # synthetic catalogue


def _config(model: str) -> RunConfig:
    return RunConfig(executor="per-client", model=model, dim=8, reconstruct_epochs=1)


def _context(config: RunConfig, partition: int, partitions: int = 1000) -> Context:
    return Context(
        run_id=1, node_id=partition + 1,
        node_config={"partition-id": partition, "num-partitions": partitions},
        state=RecordDict(), run_config=config.to_user_config(),
    )


def _instruction(arrays: dict[str, np.ndarray], kind: str, server_round: int = 1) -> Message:
    content = RecordDict({ARRAYS: numpy_to_arrays(arrays), CONFIG: ConfigRecord({SERVER_ROUND: server_round})})
    return Message(content=content, dst_node_id=1, message_type=kind)


@pytest.mark.parametrize("model_name", sorted([*MODELS, *FEATURE_MODELS]))
def test_train_reply_holds_only_global_parameters(model_name: str) -> None:
    config = _config(model_name)
    arrays = initial_global_arrays(config, N_ITEMS)
    context = _context(config, partition=3)
    reply = client_app.train(_instruction(arrays, MessageType.TRAIN), context)

    model = build_run_model(config, 1, N_ITEMS)
    sent = set(reply.content.array_records[ARRAYS].keys())
    assert sent == set(model.global_parameter_names)
    assert not sent & set(model.local_parameter_names)
    # nothing else in the reply is an array record either
    assert list(reply.content.array_records) == [ARRAYS]
    # the user vector stayed on the node
    stored = UserVectorStore(context.state).load(3)
    assert stored is not None and set(stored) == set(model.local_parameter_names)
    assert reply.content.metric_records[METRICS][NUM_EXAMPLES] > 0


def test_update_is_the_difference_to_the_received_model() -> None:
    config = _config("mf")
    arrays = initial_global_arrays(config, N_ITEMS)
    reply = client_app.train(_instruction(arrays, MessageType.TRAIN), _context(config, 5))
    update = {k: a.numpy() for k, a in reply.content.array_records[ARRAYS].items()}
    assert set(update) == set(arrays)
    moved = np.abs(update["item_embedding.weight"]).sum(axis=1) > 0
    assert 0 < moved.sum() < N_ITEMS  # only items the user trained on (positives, negatives) moved


def test_user_vector_persists_and_evolves_across_rounds() -> None:
    config = _config("mf")
    arrays = initial_global_arrays(config, N_ITEMS)
    context = _context(config, 7)
    client_app.train(_instruction(arrays, MessageType.TRAIN, 1), context)
    first = UserVectorStore(context.state).load(7)
    client_app.train(_instruction(arrays, MessageType.TRAIN, 2), context)
    second = UserVectorStore(context.state).load(7)
    assert first is not None and second is not None
    assert not np.allclose(first["user_embedding.weight"], second["user_embedding.weight"])


def test_evaluate_reconstructs_untrained_users_only() -> None:
    config = _config("mf")
    arrays = initial_global_arrays(config, N_ITEMS)
    context = _context(config, 11)
    fresh = client_app.evaluate(_instruction(arrays, MessageType.EVALUATE), context)
    metrics = fresh.content.metric_records[METRICS]
    assert metrics[USERS_RECONSTRUCTED] == 1
    assert 0.0 <= metrics["hr@10"] <= 1.0 and "full_recall@10" in metrics
    assert not fresh.content.array_records  # evaluation sends no arrays at all
    client_app.train(_instruction(arrays, MessageType.TRAIN), context)
    trained = client_app.evaluate(_instruction(arrays, MessageType.EVALUATE), context)
    assert trained.content.metric_records[METRICS][USERS_RECONSTRUCTED] == 0


def test_wrong_shape_global_model_is_refused() -> None:
    config = _config("mf")
    arrays = initial_global_arrays(config, N_ITEMS)
    arrays["item_embedding.weight"] = arrays["item_embedding.weight"][:, :4]
    with pytest.raises(ValueError, match="item_embedding.weight"):
        client_app.train(_instruction(arrays, MessageType.TRAIN), _context(config, 0))


def test_packing_refuses_local_parameters() -> None:
    config = _config("neumf")
    leaked = {"gmf_user_embedding.weight": np.zeros((1, 8), dtype=np.float32)}
    with pytest.raises(RuntimeError, match="non-global"):
        global_only(leaked, config, N_ITEMS)


def test_non_finite_global_model_is_refused() -> None:
    config = _config("mf")
    arrays = initial_global_arrays(config, N_ITEMS)
    arrays["item_bias.weight"][3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        client_app.train(_instruction(arrays, MessageType.TRAIN), _context(config, 0))


def test_cohort_node_trains_exactly_its_sampled_users_like_per_client_nodes() -> None:
    """A cohort node (partition 1 of 4) trains its users among the sampled ones in one pass;
    its reply is the example-weighted mean of what per-client nodes would have sent."""
    from fedrec.client.partition import split_for
    from fedrec.core.federation.aggregation import weighted_mean
    from fedrec.core.training.local_round import user_round
    from fedrec.protocol.wire import SAMPLED_USERS, USERS_TRAINED

    config = RunConfig(model="mf", dim=8, executor="cohort", cohort_nodes=4)
    arrays = initial_global_arrays(config, N_ITEMS)
    sampled = [1, 2, 5, 9, 13, 14, 40]  # node 1 of 4 holds 1, 5, 9, 13 of these
    message = _instruction(arrays, MessageType.TRAIN, server_round=3)
    message.content[CONFIG][SAMPLED_USERS] = sampled
    context = _context(config, partition=1, partitions=4)
    reply = client_app.train(message, context)

    split = split_for(config)
    expected = [user_round(config, arrays, None, split.user_data(u), 3) for u in (1, 5, 9, 13)]
    mean = weighted_mean([r.update for r in expected], [r.num_examples for r in expected])
    metrics = reply.content.metric_records[METRICS]
    assert metrics[USERS_TRAINED] == 4
    assert metrics[NUM_EXAMPLES] == sum(r.num_examples for r in expected)
    for name, array in reply.content.array_records[ARRAYS].items():
        np.testing.assert_allclose(array.numpy(), mean[name], atol=1e-6)
    from fedrec.client.partition import node_users
    from fedrec.client.state import CohortVectorStore

    held = node_users(context.node_config, split.n_users)
    store = CohortVectorStore(context.state, held, {"user_embedding.weight": (1, config.dim)})
    trained, untouched = store.load_many([1, 5, 9, 13]), store.load_many([17, 21])
    assert untouched == [None, None]  # held by this node but not sampled
    for result, vector in zip(expected, trained):
        assert vector is not None
        np.testing.assert_allclose(vector["user_embedding.weight"], result.local["user_embedding.weight"], atol=1e-6)


def test_a_node_refuses_a_malformed_sampled_user_list() -> None:
    from fedrec.protocol.wire import SAMPLED_USERS

    config = RunConfig(model="mf", dim=8, executor="cohort")
    message = _instruction(initial_global_arrays(config, N_ITEMS), MessageType.TRAIN)
    message.content[CONFIG][SAMPLED_USERS] = [3, 10**6]
    with pytest.raises(ValueError, match="sampled-users"):
        client_app.train(message, _context(config, partition=0, partitions=2))


@pytest.mark.parametrize("model_name", sorted(FEATURE_MODELS))
def test_evaluate_scores_feature_models_too(model_name: str) -> None:
    config = _config(model_name)
    arrays = initial_global_arrays(config, N_ITEMS)
    reply = client_app.evaluate(_instruction(arrays, MessageType.EVALUATE), _context(config, 11))
    metrics = reply.content.metric_records[METRICS]
    assert metrics[USERS_RECONSTRUCTED] == 1 and 0.0 <= metrics["hr@10"] <= 1.0


def test_a_deployed_device_refuses_a_feature_model(tmp_path) -> None:
    """A device gets the catalogue, not the item features: feature models are not deployable yet.
    (RunConfig refuses a feature model with a catalogue first; the device checks again.)"""
    config = _config("hybrid")
    with pytest.raises(ValueError, match="future work"):
        RunConfig(model="hybrid", catalogue=str(tmp_path / "items.txt"))
    message = _instruction(initial_global_arrays(config, N_ITEMS), MessageType.TRAIN)
    message.content[CONFIG][CATALOGUE] = [str(i) for i in range(N_ITEMS)]
    context = Context(run_id=1, node_id=1, state=RecordDict(), run_config=config.to_user_config(),
                      node_config={NODE_DATA_FILE: str(tmp_path / "ratings.csv"),
                                   NODE_STATE_DIR: str(tmp_path / "state")})
    with pytest.raises(ValueError, match="cannot run on a deployed device.*future work"):
        client_app.train(message, context)
    assert not (tmp_path / "state").exists()  # refused before anything was read or written
