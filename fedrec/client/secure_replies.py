"""The ClientApp's side of ``dp user-distributed``: a node's SecAgg+ stages and its evaluation.

A train instruction that carries a SecAgg+ record (:mod:`fedrec.protocol.secagg_records`)
is one stage of :mod:`fedrec.server.secure_rounds`; :func:`secure_train_reply` answers it.

* **setup**: the node checks the request (its id among the round's, the config's modulus and
  vector length those of the run's own plan, :func:`~fedrec.protocol.distributed_plan.flower_run_plan`,
  which the node computes from the run config, never from the server; at least ``n_min``
  nodes sampled), trains its user, clips the **global part** of the update to ``C``,
  encodes it with :func:`~fedrec.core.privacy.distributed_mode.encode_update` — its own
  discrete Gaussian noise share drawn from a fresh :class:`~fedrec.core.privacy.secure_random.SecureRandom`
  — (a user with nothing to train encodes the zero vector: its noise share still counts),
  keeps the encoding ``z_u`` in the node's state, and replies with its public keys only.
* **share keys / collect masked / unmask** (:mod:`fedrec.client.secagg_stages`, which
  imports no torch): the :class:`~fedrec.secure_aggregation.SecAggClient` kept in the
  node's state between messages answers; the only vector that leaves is the masked
  ``y_u = z_u + masks``. ``z_u`` is deleted from the state once masked, the client's
  secrets after the unmask stage.

What never leaves the node: the local parts (user vector, personal head), the un-noised
update, the encoding ``z_u`` and the SecAgg+ secrets (they live in ``context.state``, the
node's own storage). A request that breaks the protocol raises
:class:`~fedrec.secure_aggregation.errors.ProtocolViolation` (Flower returns an error
reply; the server counts the node as dropped).

Evaluation (:func:`secure_evaluate_reply`): each evaluated user's ``K`` clamped metrics
plus Gaussian noise of std ``σ_e·√K`` drawn on the device (SecureRandom), summed over the
node's users. A user's release is then ``1/(2σ_e²)``-zCDP on its own, exactly the
evaluation release the server's DDG accountant counts per evaluation round (the plan's
``σ_e``); the server only averages.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict

from fedrec.client.node import Node, open_node
from fedrec.client.secagg_stages import (
    forget_round,
    is_setup,
    mark_next_stage,
    save_client,
    stage_reply,
    store_input,
)
from fedrec.core.families.registry import family_of
from fedrec.core.privacy import plan
from fedrec.core.privacy.distributed_mode import encode_update, flatten, rotation_seed
from fedrec.core.privacy.evaluation import metric_vector, noise_std
from fedrec.core.privacy.mechanisms import clip_update, secure_generator
from fedrec.core.training.device import resolve_device
from fedrec.core.training.implicit import needs_evaluation_negatives
from fedrec.protocol.distributed_plan import flower_run_plan
from fedrec.protocol.secagg_records import from_content, to_content
from fedrec.protocol.wire import METRICS, USERS_EVALUATED
from fedrec.secure_aggregation.client import SecAggClient
from fedrec.secure_aggregation.config import SecAggConfig
from fedrec.secure_aggregation.errors import ProtocolViolation


def secure_train_reply(message: Message, context: Context) -> RecordDict:
    """The reply to one SecAgg+ stage (see the module docstring)."""
    if not is_setup(message):
        return stage_reply(message, context)
    request, server_round = from_content(message.content)
    return to_content(_setup(message, context, request, server_round), server_round)


def _setup(message: Message, context: Context, request: dict[str, Any], server_round: int) -> dict[str, Any]:
    forget_round(context)
    node = open_node(message, context)
    config = node.config
    if config.dp != "user-distributed":
        raise ProtocolViolation(f"a SecAgg+ instruction in a dp {config.dp} run")
    users = node.users_this_round(message)
    if len(users) > 1:
        raise ProtocolViolation(f"this node holds {len(users)} users; dp user-distributed samples nodes as users "
                                "(one user per node: its encoding would otherwise carry several users)")
    run = flower_run_plan(config, node.global_arrays, node.split.n_users, deployed=node.deployed)
    try:
        offered = SecAggConfig.from_record(request)
    except ValueError as error:
        raise ProtocolViolation(f"bad SecAgg+ config: {error}") from None
    q = run.quantiser
    if (offered.modulus_bits, offered.vector_length) != (q.bits, q.encoded_dim):
        raise ProtocolViolation(f"the server's SecAgg+ config (2^{offered.modulus_bits}, length "
                                f"{offered.vector_length}) is not the run's plan (2^{q.bits}, length {q.encoded_dim})")
    if offered.num_clients < run.n_min:
        raise ProtocolViolation(f"{offered.num_clients} nodes in the round, fewer than the n_min = {run.n_min} whose "
                                "noise shares the accountant counts")
    client = SecAggClient(context.node_id)
    reply = client.setup(request)  # refuses a request not naming this node before any training
    encoded = _train_and_encode(node, message, users, run, server_round)
    store_input(context, encoded, q.modulus)
    save_client(context, client, server_round)
    mark_next_stage(context, expected=True)
    return reply


def _train_and_encode(node: Node, message: Message, users: list[int], run: Any, server_round: int) -> np.ndarray:
    """Train the node's user; its clipped global update encoded with its own noise share
    (``int64`` in ``[−m/2, m/2)``); the zero vector's encoding when it has nothing to train."""
    config, split = node.config, node.split
    family = family_of(config.model)
    names = sorted(node.global_arrays)
    seed = rotation_seed(config.seed, server_round)
    generator = secure_generator()
    encoded: list[np.ndarray] = []

    def encode(update: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        clipped, _ = clip_update(update, config.clip)
        encoded.append(encode_update(flatten(clipped, names), run, seed, generator))
        return {name: np.zeros_like(value) for name, value in update.items()}

    for_evaluation = needs_evaluation_negatives(config.train_negatives)
    data = [family.user_data(split, user, for_evaluation=for_evaluation) for user in users]
    result = family.train_users(config, node.global_arrays, node.store.load_many(users), data, server_round,
                                device=resolve_device(config.device), update_transform=encode)
    kept = [(user, local) for user, local in zip(result.users, result.locals) if local]
    if kept:
        node.store.save_many([user for user, _ in kept], [local for _, local in kept])
    node.persist(server_round)
    if len(encoded) > 1:
        raise RuntimeError(f"{len(encoded)} users encoded on one node; one is allowed")
    if not encoded:
        encoded.append(encode_update(np.zeros(run.quantiser.dim, dtype=np.float64), run, seed, generator))
    return encoded[0]


def secure_evaluate_reply(node: Node, data: list, server_round: int) -> RecordDict:
    """The node's evaluation release: the sum over its evaluated users of their metric
    vectors, each noised on the device with std ``σ_e·√K``, and their number."""
    config = node.config
    family = family_of(config.model)
    keys = plan.private_metric_keys(config.eval_k)
    rows = family.evaluate_users(config, node.global_arrays, node.store.load_many([d.user for d in data]), data,
                                 device=resolve_device(config.device)) if data else []
    generator = secure_generator()
    std = noise_std(config)
    total = np.zeros(len(keys), dtype=np.float64)
    for row in rows:
        total += metric_vector(row, keys) + np.asarray(generator.normal(0.0, std, size=len(keys)))
    node.persist(server_round)
    values: dict[str, float | int] = {key: float(np.float32(value)) for key, value in zip(keys, total)}
    values[USERS_EVALUATED] = len(rows)
    return RecordDict({METRICS: MetricRecord(values)})
