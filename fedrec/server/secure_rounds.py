"""One ``dp user-distributed`` training round over Flower: SecAgg+ driven by the ServerApp.

The server plays :class:`~fedrec.secure_aggregation.SecAggServer` over
``send(grid, messages, timeout)`` (the loop's ``send_and_receive``), one exchange per stage:

0. **setup** — the round's train instructions (global arrays, round config) plus the SecAgg+
   config, the sampled node ids and the graph seed. Each node trains its user, clips the
   global part of the update, encodes it with its own discrete Gaussian noise share
   (:mod:`fedrec.client.secure_replies`), keeps the encoding, and answers with two public keys;
1. **share keys** — public keys out, encrypted Shamir shares back (routed, never readable);
2. **collect masked** — the shares for each node out, each node's masked vector ``y_u`` back;
3. **unmask** — survivors' seed shares and dropped nodes' key shares back; the server
   removes the masks from the **sum** only.

Guarantees. What the server holds of the clients' vectors is each ``y_u`` (uniform on
``Z_m^L`` without the node's self-mask seed, which it never rebuilds for a node it also
has the mask key of), their sum, and the unmasked sum ``Σ_{u∈U_3} z_u mod 2^bits`` over the
survivors ``U_3`` (nodes whose masked vector arrived). The decoded sum is divided by
``|U_3|`` (the number sampled when nobody drops) and returned for the optimiser's step.

Dropouts. A node whose reply is missing, an error, or malformed is dropped from the
round (the protocol recovers while every needed secret keeps ``t`` holders). The
accountant counts the noise of ``n_min`` shares (``ddg-min-clients``, or every sampled
client): the sum is released only when ``|U_3| ≥ n_min``, so that the survivors' noise
``|U_3|·σ_share² ≥ n_min·σ_share²`` reaches the accounted σ. Below ``n_min`` — or when a
secret loses its ``t`` holders — the round is **skipped**: the unmask stage is never
asked (below ``n_min``) or the sum cannot be rebuilt, the model stays as it was, nothing is
released and no ledger row is written. The reason is in :attr:`SecureRound.skipped`.

The sum check (:func:`~fedrec.core.privacy.distributed_mode.check_sum`, as in the round
driver): a decoded sum longer than any sum of ``|U_3|`` honest encodings can be (a client
sent garbage) is **refused**: the model stays as it was, but the sum was released to the
server, so the round is still accounted (:attr:`SecureRound.refused` says why).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from fedrec.core.privacy.distributed_mode import RunPlan, SumOutOfBound, checked_mean
from fedrec.protocol.distributed_plan import secagg_config
from fedrec.protocol.secagg_records import from_content, to_content
from fedrec.protocol.wire import ARRAYS, CONFIG
from fedrec.secure_aggregation import messages as msg
from fedrec.secure_aggregation.errors import RoundCannotBeUnmasked
from fedrec.secure_aggregation.server import SecAggServer, VectorObserver
from fedrec.server.payload import content_bytes

logger = logging.getLogger("fedrec.server")
Send = Callable[[Grid, list[Message], float], list[Message]]


@dataclass
class SecureRound:
    """What one round gave: the survivors' mean update (flat, float64; ``None`` when skipped)."""

    mean: np.ndarray | None
    sampled: int
    survivors: tuple[int, ...] = ()
    skipped: str = ""  # why nothing was released ("" when the sum was)
    refused: str = ""  # why a released sum is not used (the sum check), "" when it is
    modular_sum: np.ndarray | None = None  # the unmasked Σ z_u mod 2^bits (uint64), for the tests
    dropped: dict[str, list[int]] = field(default_factory=dict)
    #: stage → payload bytes sent to / received from all nodes (setup down includes the model)
    bytes_down: dict[str, int] = field(default_factory=dict)
    bytes_up: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def released(self) -> bool:
        """Whether the server learnt the round's sum (then the round is accounted)."""
        return self.modular_sum is not None


def run_secure_round(grid: Grid, instructions: Sequence[Message], run: RunPlan, server_round: int,
                     rotation: int, timeout: float, send: Send,
                     observe_vector: VectorObserver | None = None) -> SecureRound:
    """Run SecAgg+ over the nodes ``instructions`` address (one train instruction each:
    global arrays and round config); the decoded mean of the survivors' updates, or the
    reason the round was skipped. ``rotation``: the round's public rotation seed."""
    nodes = [int(m.metadata.dst_node_id) for m in instructions]
    result = SecureRound(None, len(nodes))
    if len(nodes) < max(2, run.n_min):
        result.skipped = (f"{len(nodes)} node(s) sampled, fewer than the {max(2, run.n_min)} the noise split (n_min = "
                          f"{run.n_min}) and secure aggregation need")
        return result
    server = SecAggServer(secagg_config(run, len(nodes)), nodes, observe_vector=observe_vector)
    by_node = {int(m.metadata.dst_node_id): m for m in instructions}

    def exchange(stage: str, requests: dict[int, msg.Message]) -> dict[int, msg.Message]:
        started = time.perf_counter()
        messages = []
        for node, request in requests.items():
            content = to_content(request, server_round)
            if stage == msg.SETUP:  # the train instruction rides along
                content[ARRAYS] = by_node[node].content.array_records[ARRAYS]
                content[CONFIG] = by_node[node].content.config_records[CONFIG]
            messages.append(Message(content=content, dst_node_id=node, message_type=MessageType.TRAIN,
                                    group_id=str(server_round)))
        result.bytes_down[stage] = content_bytes(messages)
        replies = send(grid, messages, timeout)
        result.bytes_up[stage] = content_bytes(replies)
        result.seconds[stage] = time.perf_counter() - started
        return _read_replies(stage, replies, requests, server_round)

    try:
        server.receive_public_keys(exchange(msg.SETUP, server.setup_requests()))
        server.receive_encrypted_shares(exchange(msg.SHARE_KEYS, server.share_keys_requests()))
        server.receive_masked_vectors(exchange(msg.COLLECT_MASKED, server.masked_vector_requests()))
        result.survivors = server.survivors
        if len(server.survivors) < run.n_min:  # before any unmasking: the sum is never rebuilt
            raise RoundCannotBeUnmasked(
                f"{len(server.survivors)} masked vectors arrived, fewer than n_min = {run.n_min}: their noise "
                "shares would not reach the accounted σ, so the sum is not unmasked")
        total = server.receive_unmask_shares(exchange(msg.UNMASK, server.unmask_requests()))
    except RoundCannotBeUnmasked as error:
        result.skipped = str(error)
        result.dropped = {stage: list(nodes) for stage, nodes in server.dropped.items()}
        return result
    result.dropped = {stage: list(nodes) for stage, nodes in server.dropped.items()}
    result.modular_sum = total
    try:
        result.mean = checked_mean(total.astype(np.int64), run, rotation, len(server.survivors))
    except SumOutOfBound as error:
        result.refused = str(error)
    return result


def _read_replies(stage: str, replies: list[Message], requests: dict[int, Any],
                  server_round: int) -> dict[int, msg.Message]:
    """The usable replies by node: errors, replies to another round or stage, strangers and
    unreadable records are left out (the protocol then counts the node as dropped)."""
    out: dict[int, msg.Message] = {}
    for reply in replies:
        node = int(reply.metadata.src_node_id)
        if node not in requests:
            continue
        if reply.has_error() or not reply.has_content():
            reason = reply.error.reason if reply.has_error() else "no content"
            logger.warning("round %d: SecAgg+ %s: node %d dropped (%s)", server_round, stage, node, reason)
            continue
        try:
            message, round_ = from_content(reply.content)
        except ValueError as error:
            logger.warning("round %d: SecAgg+ %s: node %d's reply is unreadable: %s", server_round, stage, node, error)
            continue
        if round_ != server_round:
            logger.warning("round %d: SecAgg+ %s: node %d answered for round %d", server_round, stage, node, round_)
            continue
        out[node] = message
    return out
