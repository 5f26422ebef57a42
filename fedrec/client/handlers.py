"""The ClientApp's work where a model runs: training, evaluation, the SecAgg+ setup stage.

:mod:`fedrec.client.app` imports this module (and with it torch and the model code) only
for a message that needs a model; the later SecAgg+ stages never do.

``train``: receive the global part of the model and the run config; for each of this
node's users that takes part in the round, load its local parameters (a new user starts
from seeded ones), run the model family's local round, keep the new local parameters on
the node, and reply with the **update of the global part only** (the example-weighted
mean over the node's users; for a family whose server adds shares, their sum), the
number of examples and the training loss.

``evaluate``: the family's evaluation of each of the node's users with held-out data
(ranking metrics at K; RMSE/MAE for a rating model), pooled into one reply weighted as
the family pools it. A user who never trained here first fits its local part with the
global part frozen — the cold-start path.

Where the users, their state and the model come from is the node's business
(:mod:`fedrec.client.node`: a simulated node or a deployed device, one interface); under
a DP mode the replies come from the DP layer (:mod:`fedrec.client.private_replies`; under
``user-distributed``, :mod:`fedrec.client.secure_replies`: SecAgg+ stages).
No reply contains a local parameter: it is packed by
:func:`~fedrec.client.model_arrays.global_only`, which refuses anything not declared global.
"""

from __future__ import annotations

import time

from flwr.app import Context, Message, MetricRecord, RecordDict

from fedrec.client.model_arrays import global_only, zero_update
from fedrec.client.node import open_node, server_round
from fedrec.client.private_replies import private_evaluate_reply, private_train_reply
from fedrec.client.secure_replies import secure_evaluate_reply, secure_train_reply
from fedrec.core.evaluation.protocols import metric_keys
from fedrec.core.families.registry import family_of
from fedrec.core.federation.server_step import reply_update
from fedrec.core.training.device import resolve_device
from fedrec.core.training.implicit import needs_evaluation_negatives
from fedrec.protocol.secagg_records import is_secagg
from fedrec.protocol.wire import (
    ARRAYS,
    METRICS,
    NODE_SECONDS,
    NUM_EXAMPLES,
    TRAIN_LOSS,
    USERS_EVALUATED,
    USERS_RECONSTRUCTED,
    USERS_TRAINED,
)


def train_reply(msg: Message, context: Context) -> Message:
    """Local training of this node's users; replies with the global-part update (under
    ``dp user-distributed``, one SecAgg+ stage: :mod:`fedrec.client.secure_replies`)."""
    if is_secagg(msg.content):
        return Message(content=secure_train_reply(msg, context), reply_to=msg)
    started = time.perf_counter()
    node = open_node(msg, context)
    config, split, family, round_ = node.config, node.split, family_of(node.config.model), server_round(msg)
    for_evaluation = needs_evaluation_negatives(config.train_negatives)  # unseen-eval excludes them from training
    data = [family.user_data(split, user, for_evaluation=for_evaluation) for user in node.users_this_round(msg)]
    if config.dp != "off":
        return Message(content=private_train_reply(msg, node, data, round_), reply_to=msg)
    result = family.train_users(config, node.global_arrays, node.store.load_many([d.user for d in data]), data,
                                round_, device=resolve_device(config.device))
    kept = [(user, local) for user, local in zip(result.users, result.locals) if local]
    if kept:
        node.store.save_many([user for user, _ in kept], [local for _, local in kept])
    node.persist(round_)
    trained = result.weight > 0  # a node without training data contributes nothing (weight 0)
    update = reply_update(family, result.update_sum, result.weight) if trained else zero_update(node.global_arrays)
    metrics = MetricRecord({NUM_EXAMPLES: int(result.weight), TRAIN_LOSS: result.mean_loss if trained else 0.0,
                            USERS_TRAINED: len(result.users), NODE_SECONDS: time.perf_counter() - started})
    content = RecordDict({ARRAYS: global_only(update, config, split.n_items), METRICS: metrics})
    return Message(content=content, reply_to=msg)


def evaluate_reply(msg: Message, context: Context) -> Message:
    """The family's metrics of this node's users with held-out data under the received model."""
    node = open_node(msg, context)
    config, split, family = node.config, node.split, family_of(node.config.model)
    evaluated = set(family.evaluated_users(split))
    data = [family.user_data(split, user) for user in node.users_this_round(msg) if user in evaluated]
    if config.dp == "user-distributed":
        return Message(content=secure_evaluate_reply(node, data, server_round(msg)), reply_to=msg)
    if config.dp != "off":
        return Message(content=private_evaluate_reply(msg, node, data, server_round(msg)), reply_to=msg)
    stored = node.store.load_many([d.user for d in data])
    rows = family.evaluate_users(config, node.global_arrays, stored, data, device=resolve_device(config.device))
    node.persist(server_round(msg))  # a deployed device keeps the newest global model for offline use
    values, weight = family.pool(rows) if rows else ({}, 0.0)
    values = values or {key: 0.0 for key in metric_keys(config.eval_k)}
    metrics = MetricRecord({**values, NUM_EXAMPLES: weight, USERS_EVALUATED: len(rows),
                            USERS_RECONSTRUCTED: sum(local is None for local in stored)})
    return Message(content=RecordDict({METRICS: metrics}), reply_to=msg)
