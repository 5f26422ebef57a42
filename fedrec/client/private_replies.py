"""The DP layer of the ClientApp: a node's replies under ``record``, ``user-local``, ``user-central``.

``train``: each due user's private round (:func:`fedrec.core.privacy.client_round.private_train_users`:
the family's local round, the mode's mechanism, the user's budget); the reply carries the
private mean update with each trained user weighing 1, the number of users that trained,
and per user what it spent or that it refused — no example counts, no training loss and no
compute time (they grow with the user's records: releases no accountant covers).

``evaluate``: a private release (:mod:`fedrec.core.privacy.evaluation`): the sum of the
users' ``K`` private metrics — noised per user on the device and accounted in its history
(``record``, ``user-local``; a user whose budget it would exceed refuses) or exact for the
trusted server to noise (``user-central``) — and the number of users.

A deployed device also reports each user's prior history (so that the server's ledger
covers releases it missed) and countersigns each row with its SuperNode key.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedrec.client.model_arrays import global_only, zero_update
from fedrec.client.node import Node
from fedrec.core.families.registry import family_of
from fedrec.core.federation.server_step import reply_update
from fedrec.core.privacy import plan
from fedrec.core.privacy.accounting import Step, compact
from fedrec.core.privacy.client_round import Release, private_train_users
from fedrec.core.privacy.evaluation import exact_sum, local_private_evaluation
from fedrec.core.training.device import resolve_device
from fedrec.protocol.wire import (
    ARRAYS,
    CONFIG,
    DP_CLIP,
    DP_WITHIN_CLIP,
    METRICS,
    NUM_EXAMPLES,
    PRIVACY,
    PRIVACY_EPSILON,
    PRIVACY_NOISE,
    PRIVACY_PRIOR_NOISE,
    PRIVACY_PRIOR_RATE,
    PRIVACY_PRIOR_RUNS,
    PRIVACY_PRIOR_STEPS,
    PRIVACY_RATE,
    PRIVACY_REFUSED,
    PRIVACY_RELEASE,
    PRIVACY_SIGNATURES,
    PRIVACY_STEPS,
    PRIVACY_USERS,
    RELEASE_EVALUATE,
    RELEASE_TRAIN,
    USERS_EVALUATED,
    USERS_TRAINED,
)


def private_train_reply(msg: Message, node: Node, data: list, server_round: int) -> RecordDict:
    """The content of a DP training reply (see the module docstring)."""
    config, global_arrays, store, histories = node.config, node.global_arrays, node.store, node.histories
    users = [d.user for d in data]
    instruction = msg.content.config_records.get(CONFIG)
    if config.dp == "user-central" and instruction is not None and DP_CLIP in instruction:
        clip = float(instruction[DP_CLIP])  # adaptive clipping: the server's clip for this round
        if not clip > 0 or not np.isfinite(clip):
            raise ValueError(f"refusing the round: {DP_CLIP}={clip!r} is not a positive clip norm")
        config = replace(config, clip=clip)
    prior = histories.load_many(users)
    result, releases, new_histories, within_clip = private_train_users(
        config, global_arrays, store.load_many(users), data, server_round, prior)
    kept = [(user, local) for user, local in zip(result.users, result.locals) if local]
    if kept:
        store.save_many([user for user, _ in kept], [local for _, local in kept])
    if config.dp != "user-central":
        for user, history in zip(users, new_histories):
            if history:
                histories.save(user, history)
    node.persist(server_round)
    update = (reply_update(family_of(config.model), result.update_sum, result.weight) if result.weight > 0
              else zero_update(global_arrays))
    values = {NUM_EXAMPLES: int(result.weight), USERS_TRAINED: len(result.users)}
    if config.dp == "user-central" and config.adaptive_clip:  # the bits the server noises; nothing else
        values[DP_WITHIN_CLIP] = within_clip
    content = RecordDict({ARRAYS: global_only(update, config, node.split.n_items), METRICS: MetricRecord(values)})
    if releases:  # (Flower cannot size a ConfigRecord holding empty lists)
        priors = dict(zip(users, prior)) if node.deployed else None
        content[PRIVACY] = privacy_record(releases, priors, RELEASE_TRAIN,
                                          node.countersignatures(msg, releases, RELEASE_TRAIN))
    return content


def private_evaluate_reply(msg: Message, node: Node, data: list, server_round: int) -> RecordDict:
    """The content of a DP evaluation reply: the K private metrics summed over the evaluated
    users, their count, and (client-accounted modes) each user's release or refusal."""
    config, global_arrays, store = node.config, node.global_arrays, node.store
    family, device = family_of(config.model), resolve_device(config.device)

    def rows_of(indices: list[int]) -> list[dict[str, float]]:
        chosen = [data[i] for i in indices]
        return family.evaluate_users(config, global_arrays, store.load_many([d.user for d in chosen]), chosen,
                                     device=device)

    users = [d.user for d in data]
    record = None
    if config.dp == "user-central":
        released = exact_sum(config, rows_of(list(range(len(data)))))
    else:
        histories = node.histories
        prior = histories.load_many(users)
        released = local_private_evaluation(config, users, prior, rows_of)
        for user, old, new in zip(users, prior, released.histories):
            if len(new) != len(old):
                histories.save(user, new)
        if released.releases:  # (Flower cannot size a ConfigRecord holding empty lists)
            priors = dict(zip(users, prior)) if node.deployed else None
            record = privacy_record(released.releases, priors, RELEASE_EVALUATE,
                                    node.countersignatures(msg, released.releases, RELEASE_EVALUATE))
    node.persist(server_round)
    keys = plan.private_metric_keys(config.eval_k)
    values: dict[str, float | int] = {key: float(np.float32(v)) for key, v in zip(keys, released.total)}
    values[USERS_EVALUATED] = int(released.count)
    content = RecordDict({METRICS: MetricRecord(values)})
    if record is not None:
        content[PRIVACY] = record
    return content


def privacy_record(releases: list[Release], priors: dict[int, list[Step]] | None = None,
                   release: str = RELEASE_TRAIN, signatures: list[str] | None = None) -> ConfigRecord:
    """Per release: user, refused, σ, q, steps, ε after; deployed, also the user's prior
    history and (with its key) its signature of the row; and which release (``train`` or
    ``evaluate``) the report is about."""
    record = ConfigRecord({
        PRIVACY_RELEASE: release,
        PRIVACY_USERS: [r.user for r in releases],
        PRIVACY_REFUSED: [int(r.refused) for r in releases],
        PRIVACY_NOISE: [float(r.noise_multiplier) for r in releases],
        PRIVACY_RATE: [float(r.sample_rate) for r in releases],
        PRIVACY_STEPS: [int(r.steps) for r in releases],
        PRIVACY_EPSILON: [float(r.epsilon) for r in releases],
    })
    if signatures is not None:
        record[PRIVACY_SIGNATURES] = list(signatures)
    if priors is not None:
        runs = [compact(priors.get(r.user, [])) for r in releases]
        record[PRIVACY_PRIOR_RUNS] = [len(h) for h in runs]
        flat = [step for h in runs for step in h]
        if flat:  # (Flower cannot size empty lists)
            record[PRIVACY_PRIOR_NOISE] = [float(s) for s, _, _ in flat]
            record[PRIVACY_PRIOR_RATE] = [float(q) for _, q, _ in flat]
            record[PRIVACY_PRIOR_STEPS] = [int(n) for _, _, n in flat]
    return record
