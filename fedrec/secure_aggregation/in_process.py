"""Run one SecAgg+ round with every client in this process: the protocol without a transport.

:func:`run_round` plays the part our ServerApp will play over ``grid.send_and_receive``:
it takes each stage's requests from :class:`SecAggServer`, hands each to its
:class:`SecAggClient`, and gives the replies back. ``drop_before`` makes clients go silent:
``{"collect_masked": [3, 7]}`` means clients 3 and 7 answer the first two stages and
nothing after, exactly like a node whose message never comes back. A client that refuses
a request (:class:`ProtocolViolation`) is treated the same way, and the refusal is kept.

Used by the tests and to check an emulation of the arithmetic against the real protocol.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping

import numpy as np

from . import messages as msg
from .client import SecAggClient
from .config import SecAggConfig
from .errors import ProtocolViolation
from .server import SecAggServer, VectorObserver


@dataclass
class RoundResult:
    """The sum, who it covers, and where the time went."""

    total: np.ndarray
    survivors: tuple[int, ...]
    server: SecAggServer
    client_refusals: dict[int, str] = field(default_factory=dict)
    #: stage → seconds spent by the server (building requests and reading replies)
    server_seconds: dict[str, float] = field(default_factory=dict)
    #: stage → seconds spent by all clients together (one after another in this process)
    client_seconds: dict[str, float] = field(default_factory=dict)
    #: stage → payload bytes of all requests sent / all replies received (see :func:`.messages.payload_bytes`)
    bytes_to_clients: dict[str, int] = field(default_factory=dict)
    bytes_from_clients: dict[str, int] = field(default_factory=dict)


def run_round(config: SecAggConfig, inputs: Mapping[int, np.ndarray], *,
              drop_before: Mapping[str, Collection[int]] | None = None, graph_seed: bytes | None = None,
              observe_vector: VectorObserver | None = None,
              client_factory: Callable[[int], SecAggClient] = SecAggClient) -> RoundResult:
    """One round over the clients ``inputs`` names; returns the server's unmasked sum.

    ``client_factory`` builds each client (a test can pass a misbehaving subclass).
    """
    drop_before = drop_before or {}
    unknown_stages = set(drop_before) - set(msg.STAGES)
    if unknown_stages:
        raise ValueError(f"unknown stage(s) {sorted(unknown_stages)}; stages are {msg.STAGES}")
    server = SecAggServer(config, list(inputs), graph_seed=graph_seed, observe_vector=observe_vector)
    clients = {node: client_factory(node) for node in inputs}
    silent: set[int] = set()
    result = RoundResult(np.zeros(0, dtype=np.uint64), (), server)

    def exchange(stage: str, requests: Mapping[int, msg.Message]) -> dict[int, msg.Message]:
        silent.update(drop_before.get(stage, ()))
        replies: dict[int, msg.Message] = {}
        started = time.perf_counter()
        for node, request in requests.items():
            if node in silent:
                continue
            client = clients[node]
            try:
                if stage == msg.SETUP:
                    replies[node] = client.setup(request)
                elif stage == msg.SHARE_KEYS:
                    replies[node] = client.share_keys(request)
                elif stage == msg.COLLECT_MASKED:
                    replies[node] = client.collect_masked(request, inputs[node])
                else:
                    replies[node] = client.unmask(request)
            except ProtocolViolation as refusal:
                result.client_refusals[node] = str(refusal)
                silent.add(node)
        result.client_seconds[stage] = time.perf_counter() - started
        result.bytes_to_clients[stage] = sum(msg.payload_bytes(request) for request in requests.values())
        result.bytes_from_clients[stage] = sum(msg.payload_bytes(reply) for reply in replies.values())
        return replies

    stages = (
        (msg.SETUP, server.setup_requests, server.receive_public_keys),
        (msg.SHARE_KEYS, server.share_keys_requests, server.receive_encrypted_shares),
        (msg.COLLECT_MASKED, server.masked_vector_requests, server.receive_masked_vectors),
        (msg.UNMASK, server.unmask_requests, server.receive_unmask_shares),
    )
    total = None
    for stage, make_requests, receive in stages:
        started = time.perf_counter()
        requests = make_requests()
        server_time = time.perf_counter() - started
        replies = exchange(stage, requests)
        started = time.perf_counter()
        total = receive(replies)
        result.server_seconds[stage] = server_time + time.perf_counter() - started
    assert total is not None
    result.total = total
    result.survivors = server.survivors
    return result
