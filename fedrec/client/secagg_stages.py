"""A node's SecAgg+ stages after setup (share keys, collect masked, unmask), without torch.

These three stages only move keys, Shamir shares and one masked vector: what they need is
the :class:`~fedrec.secure_aggregation.SecAggClient` the setup stage left in the node's
state (``context.state``) and, for *collect masked*, the encoding ``z_u`` kept there.
They import neither torch nor the model code, so on a deployed device — where Flower starts
a fresh ClientApp process for every message — each of them costs a Python start and
Flower's own imports (~0.5 s), not torch's (~2-3 s more per message on a small device).
``tests/client/test_app_imports.py`` fails if one of them pulls torch in.

State kept between messages (the node's own storage, never sent):

* :data:`STATE_KEY` — the client's secrets of the running round, deleted after unmasking;
* :data:`INPUT_KEY` — ``z_u`` (``uint64`` in ``[0, m)``), deleted once masked.

On a deployed device each stage but the last also renews the device's mark that a round is
running (:mod:`fedrec.client.round_in_progress`: its SuperNode polls fast until the next
stage arrives); the unmask stage removes it.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict

from fedrec.client.round_in_progress import clear_round, mark_round
from fedrec.protocol.secagg_records import SECAGG, from_content, to_content
from fedrec.protocol.wire import NODE_STATE_DIR
from fedrec.secure_aggregation import messages as msg
from fedrec.secure_aggregation.client import SecAggClient
from fedrec.secure_aggregation.errors import ProtocolViolation

STATE_KEY = "fedrec.secagg.client"  # context.state: the SecAggClient of the running round
INPUT_KEY = "fedrec.secagg.input"  # context.state: z_u until it is masked
INPUT = "z"
#: the longest a device polls fast waiting for the next stage (then Flower's interval again)
FAST_POLL_WINDOW_S = 120.0


def is_setup(message: Message) -> bool:
    """Whether a SecAgg+ instruction is the setup stage (the one that trains)."""
    request, _ = from_content(message.content)
    return request.get(msg.STAGE) == msg.SETUP


def stage_reply(message: Message, context: Context) -> RecordDict:
    """The reply to a share-keys, collect-masked or unmask request of the running round."""
    request, server_round = from_content(message.content)
    stage = request.get(msg.STAGE)
    client = load_client(context, server_round)
    if stage == msg.SHARE_KEYS:
        reply = client.share_keys(request)
    elif stage == msg.COLLECT_MASKED:
        reply = client.collect_masked(request, load_input(context))
        del context.state[INPUT_KEY]
    elif stage == msg.UNMASK:
        reply = client.unmask(request)
    else:
        raise ProtocolViolation(f"unknown SecAgg+ stage {stage!r} after setup")
    if stage == msg.UNMASK:
        del context.state[STATE_KEY]
    else:
        save_client(context, client, server_round)
    mark_next_stage(context, expected=stage != msg.UNMASK)
    return to_content(reply, server_round)


def mark_next_stage(context: Context, expected: bool) -> None:
    """On a deployed device: mark that another stage of this round is on its way (for at most
    the round timeout, capped at :data:`FAST_POLL_WINDOW_S`), or that none is."""
    state_dir = context.node_config.get(NODE_STATE_DIR)
    if not isinstance(state_dir, str) or not state_dir:
        return  # a simulated node: no SuperNode of its own
    if not expected:
        clear_round(state_dir)
        return
    timeout = context.run_config.get("round-timeout", FAST_POLL_WINDOW_S)
    mark_round(state_dir, min(float(timeout), FAST_POLL_WINDOW_S))


def forget_round(context: Context) -> None:
    """Drop what an earlier round that never finished left in the node's state."""
    for key in (STATE_KEY, INPUT_KEY):
        if key in context.state:
            del context.state[key]


def store_input(context: Context, encoded: np.ndarray, modulus: int) -> None:
    """Keep ``z_u mod m`` until the collect-masked stage."""
    context.state[INPUT_KEY] = ArrayRecord({INPUT: Array(np.mod(encoded, modulus).astype(np.uint64))})


def save_client(context: Context, client: SecAggClient, server_round: int) -> None:
    context.state[STATE_KEY] = to_content(client.export_state(), server_round)[SECAGG]


def load_client(context: Context, server_round: int) -> SecAggClient:
    record = context.state.config_records.get(STATE_KEY)
    if record is None:
        raise ProtocolViolation("no SecAgg+ round is running on this node (setup never arrived, or the round ended)")
    state, round_ = from_content(RecordDict({SECAGG: record}))
    if round_ != server_round:
        raise ProtocolViolation(f"a SecAgg+ request for round {server_round} while round {round_} is running")
    return SecAggClient.restore(state)


def load_input(context: Context) -> np.ndarray:
    record = context.state.array_records.get(INPUT_KEY)
    if record is None or INPUT not in record:
        raise ProtocolViolation("this node's encoded update is gone (it was masked already)")
    return record[INPUT].numpy()
