"""The ClientApp with personal parts, in-process: a local score head is in no reply — train or
evaluate, plain or under every user-level DP mode — and stays in the node's state; post-tuning
leaves no trace in the node's state."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from fedrec.client import app as client_app
from fedrec.client.state import UserVectorStore
from fedrec.core.config.run_config import RunConfig
from fedrec.core.models.personal import score_head_names
from fedrec.core.models.registry import build_model
from fedrec.core.models.run_model import build_run_model
from fedrec.protocol.wire import ARRAYS, CONFIG, SERVER_ROUND
from fedrec.server.loop import initial_global_arrays
from fedrec.server.strategy.fedopt_updates import numpy_to_arrays

N_ITEMS = 500  # synthetic catalogue
PARTITION = 3

SETTINGS = {
    "off": {},
    "user-local": dict(dp="user-local", noise_multiplier=1.0, clip=0.5),
    "user-central": dict(dp="user-central", epsilon=8.0, clip=0.5),
}


def _context(config: RunConfig) -> Context:
    return Context(run_id=1, node_id=PARTITION + 1, node_config={"partition-id": PARTITION, "num-partitions": 1000},
                   state=RecordDict(), run_config=config.to_user_config())


def _message(config: RunConfig, kind: str, server_round: int = 1) -> Message:
    arrays = initial_global_arrays(config, N_ITEMS)
    content = RecordDict({ARRAYS: numpy_to_arrays(arrays), CONFIG: ConfigRecord({SERVER_ROUND: server_round})})
    return Message(content=content, dst_node_id=1, message_type=kind)


def _array_names(reply: Message) -> set[str]:
    return {name for record in reply.content.array_records.values() for name in record.keys()}


@pytest.mark.parametrize("mode", sorted(SETTINGS))
@pytest.mark.parametrize("model", ["gmf", "neumf"])
def test_a_local_head_is_in_no_reply_and_stays_on_the_node(model: str, mode: str) -> None:
    config = RunConfig(executor="per-client", model=model, dim=8, reconstruct_epochs=1, personal="head+tune", **SETTINGS[mode])
    head = set(score_head_names(build_model(model, 1, N_ITEMS, 8)))
    assert head
    context = _context(config)
    reply = client_app.train(_message(config, MessageType.TRAIN), context)
    sent = _array_names(reply)
    assert sent == set(build_run_model(config, 1, N_ITEMS).global_parameter_names)
    assert not sent & head
    stored = UserVectorStore(context.state).load(PARTITION)
    assert stored is not None and head <= set(stored)
    evaluation = client_app.evaluate(_message(config, MessageType.EVALUATE), context)
    assert not _array_names(evaluation) & head
    # no array of the reply holds the head's values either (e.g. under another name)
    head_values = [np.asarray(stored[name]).ravel() for name in head]
    for record in reply.content.array_records.values():
        for name in record.keys():
            value = record[name].numpy().ravel()
            assert not any(v.size == value.size and np.allclose(v, value) for v in head_values), name


def test_post_tuning_stores_nothing_on_the_node() -> None:
    config = RunConfig(executor="per-client", model="mf", dim=8, reconstruct_epochs=1, personal="tune")
    plain = RunConfig(executor="per-client", model="mf", dim=8, reconstruct_epochs=1)
    states = []
    for c in (config, plain):
        context = _context(c)
        client_app.train(_message(c, MessageType.TRAIN), context)
        client_app.evaluate(_message(c, MessageType.EVALUATE), context)
        states.append(UserVectorStore(context.state).load(PARTITION))
    assert states[0] is not None and states[1] is not None
    assert set(states[0]) == set(states[1]) == {"user_embedding.weight"}
