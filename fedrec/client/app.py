"""The fedrec ClientApp (Flower Message API).

``train``: receive the global part of the model and the run config; for each user
this node holds, load the user's private vector from the node state (a new user
starts from a seeded random vector), run the local epochs, keep the new vector on
the node, and reply with the **update of the global part only** (example-weighted
mean over this node's users), the number of examples and the training loss.

``evaluate``: score every item for each of the node's users that has a test item and
reply with HR/NDCG@K (NCF protocol, 99 sampled negatives) and full-ranking HR, NDCG
and Recall@K. A user who never trained here reconstructs a vector first from its own
training items with the global part frozen — the cold-start path. Under a DP mode the
evaluate reply is a DP release instead (:mod:`fedrec.core.privacy.evaluation`): the sum
of the users' ``K`` private metrics, noised per user on the device and accounted in the
user's history (``record``, ``user-local``; a user whose budget it would exceed refuses),
or exact for the trusted server to noise (``user-central``), and the number of users;
no compute time, reconstruction count or example count travels under DP.

Deployed (``fedrec client start``): the node config names the device's ``data-file``
and ``state-dir``. The node's users are the users of its CSV, read against the item
catalogue that the server sends (:mod:`fedrec.client.local_data`); their vectors,
accountant histories and the last global model are loaded from the encrypted state
directory before the handler and written back after it
(:mod:`fedrec.client.device_state`), so a restarted device continues where it stopped.

Executors: ``per-client`` runs the users one after the other (one user per node in
``fedrec simulate``); ``cohort`` trains (and evaluates) all of the node's users that
the server sampled this round in one vectorised pass (:mod:`fedrec.core.training.cohort`),
with the same per-user arithmetic. Either way the reply is the example-weighted mean
of the users' updates, so the strategy aggregates both alike.

No reply contains a local parameter: the update is built from
``model.global_parameter_names`` alone, and the reply is checked against that set
before it leaves (:func:`_global_only`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrec.client.device_state import DeviceState, load_state, locked, save_state
from fedrec.client.local_data import LocalData, load_local_data
from fedrec.client.partition import node_users
from fedrec.client.privacy_state import PrivacyHistoryStore
from fedrec.client.state import CohortVectorStore, UserVectorStore
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.catalogue import catalogue_digest
from fedrec.core.data.split import LeaveOneOutSplit
from fedrec.core.evaluation.protocols import metric_keys
from fedrec.core.families.registry import family_of
from fedrec.core.federation.server_step import reply_update
from fedrec.core.models.registry import MODELS, needs_item_features
from fedrec.core.privacy import plan
from fedrec.core.privacy.accounting import Step, compact
from fedrec.core.privacy.client_round import Release, private_train_users
from fedrec.core.privacy.evaluation import exact_sum, local_private_evaluation
from fedrec.core.privacy.mechanisms import poisson_sample
from fedrec.core.privacy.signing import release_statement, sign_release
from fedrec.core.training.device import resolve_device
from fedrec.protocol.array_check import array_problem
from fedrec.protocol.wire import (
    ARRAYS,
    CATALOGUE,
    CONFIG,
    DP_CLIP,
    DP_WITHIN_CLIP,
    LEDGER_RUN_ID,
    METRICS,
    NODE_AUTH_KEY,
    NODE_DATA_FILE,
    NODE_DEVICE,
    NODE_SECONDS,
    NODE_STATE_DIR,
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
    SAMPLED_USERS,
    SERVER_ROUND,
    TRAIN_LOSS,
    USERS_EVALUATED,
    USERS_RECONSTRUCTED,
    USERS_TRAINED,
)

app = ClientApp()


@lru_cache(maxsize=8)
def _declared_split(config: RunConfig, n_items: int) -> tuple[tuple[str, ...], tuple[str, ...], dict]:
    """(global names, local names, shapes) the run's model family declares; built once per
    process (a feature model with the run's item features: ``W``'s shape is ``(dim, F)``)."""
    parts = family_of(config.model).parts(config, n_items)
    return parts.global_names, parts.local_names, parts.shapes


def _received_arrays(msg: Message, config: RunConfig, n_items: int) -> dict[str, np.ndarray]:
    """The global arrays of the instruction, checked against the model's global part."""
    record = msg.content.array_records.get(ARRAYS)
    if record is None:
        raise ValueError(f"instruction carries no ArrayRecord {ARRAYS!r}")
    arrays = {name: array.numpy() for name, array in record.items()}
    global_names, _, shapes = _declared_split(config, n_items)
    problem = array_problem(arrays, {name: shapes[name] for name in global_names})
    if problem is not None:
        raise ValueError(f"refusing the received global model: {problem}")
    return {name: value.astype(np.float32, copy=False) for name, value in arrays.items()}


def _global_only(update: dict[str, np.ndarray], config: RunConfig, n_items: int) -> ArrayRecord:
    """Pack an update, refusing anything that is not a declared global parameter."""
    global_names, local_names, _ = _declared_split(config, n_items)
    leaked = set(update) - set(global_names)
    if leaked or set(local_names) & set(update):
        raise RuntimeError(f"refusing to send non-global parameters {sorted(leaked)}")
    return ArrayRecord({name: Array(np.ascontiguousarray(update[name])) for name in global_names})


def _vector_store(context: Context, config: RunConfig,
                  split: LeaveOneOutSplit) -> UserVectorStore | CohortVectorStore:
    """Where this node keeps its users' vectors: a record per user, or stacked (cohort)."""
    if config.executor != "cohort":
        return UserVectorStore(context.state)
    _, local_names, shapes = _declared_split(config, split.n_items)
    held = node_users(context.node_config, split.n_users)
    return CohortVectorStore(context.state, held, {name: shapes[name] for name in local_names})


def _users_this_round(msg: Message, context: Context, n_users: int, config_: RunConfig | None = None) -> list[int]:
    """The node's users, or (cohort executor) those of them the server sampled.

    Under user-central DP with the cohort executor the node samples its own users by
    Poisson, ``q = clients-per-round / n``, from a SecureRandom (ChaCha20, OS key): no list
    of sampled users travels, so no node learns who else took part (the amplification needs
    that).
    """
    if NODE_DATA_FILE in context.node_config:  # a deployed device: every user of its CSV
        return list(range(n_users))
    held = node_users(context.node_config, n_users)
    if (config_ is not None and config_.dp == "user-central" and config_.executor == "cohort"
            and msg.metadata.message_type == MessageType.TRAIN):
        return poisson_sample(held, min(1.0, config_.clients_per_round / n_users))
    config = msg.content.config_records.get(CONFIG)
    if config is None or SAMPLED_USERS not in config:
        return held
    sampled = config[SAMPLED_USERS]
    if not isinstance(sampled, list) or not all(isinstance(u, int) and 0 <= u < n_users for u in sampled):
        raise ValueError(f"{SAMPLED_USERS} must be a list of user ids in 0..{n_users - 1}")
    chosen = set(sampled)
    return [user for user in held if user in chosen]


def _check_central_units(config: RunConfig, context: Context, n_users: int) -> None:
    """(4) user-central with the per-client executor samples nodes as users: a node holding
    several users would release them together (sensitivity ``w·C``, not ``C``), so it refuses."""
    if config.dp != "user-central" or config.executor == "cohort" or NODE_DATA_FILE in context.node_config:
        return  # cohort nodes sample and clip each user; a deployed device is checked when it loads its CSV
    held = node_users(context.node_config, n_users)
    if len(held) > 1:
        raise ValueError(f"dp user-central samples nodes as users, but this node holds {len(held)} users "
                         f"(partition {context.node_config.get('partition-id')} of "
                         f"{context.node_config.get('num-partitions')}): the server's noise covers one user "
                         "per sampled node; run one user per node or --executor cohort")


def _server_round(msg: Message) -> int:
    config = msg.content.config_records.get(CONFIG)
    return int(config.get(SERVER_ROUND, 0)) if config is not None else 0


@dataclass(frozen=True)
class _Deployed:
    """A deployed device's side of a round: its data and its decrypted state."""

    state_dir: Path
    data_file: Path
    local: LocalData
    catalogue: tuple[str, ...]
    saved: DeviceState
    auth_key: Path | None = None  # the SuperNode key, which countersigns this device's ledger rows


@dataclass(frozen=True)
class _NodeRound:
    """What both handlers start from: config, this node's data split, the global arrays, the state."""

    config: RunConfig
    split: LeaveOneOutSplit
    global_arrays: dict[str, np.ndarray]
    store: UserVectorStore | CohortVectorStore
    state: RecordDict
    deployed: _Deployed | None = None

    @classmethod
    def open(cls, msg: Message, context: Context) -> "_NodeRound":
        torch.set_num_threads(1)  # one core per simulated client; Ray runs several at once
        config = RunConfig.from_user_config(context.run_config)
        if NODE_DATA_FILE in context.node_config:
            return cls._open_deployed(msg, context, config)
        split = family_of(config.model).load_split(config)
        arrays = _received_arrays(msg, config, split.n_items)
        return cls(config, split, arrays, _vector_store(context, config, split), context.state)

    @classmethod
    def _open_deployed(cls, msg: Message, context: Context, config: RunConfig) -> "_NodeRound":
        """Load the device's CSV over the server's catalogue and its encrypted state."""
        if needs_item_features(config.model):
            raise ValueError(f"model {config.model} cannot run on a deployed device: it reads item features, "
                             "and a device gets only the item catalogue (shipping features to devices is "
                             f"future work); deploy one of {', '.join(sorted(MODELS))}")
        node_config = context.node_config
        instruction = msg.content.config_records.get(CONFIG)
        catalogue = instruction.get(CATALOGUE) if instruction is not None else None
        if not isinstance(catalogue, list) or not catalogue:
            raise ValueError(f"a deployed device needs the item catalogue ({CATALOGUE!r}) in the instruction")
        catalogue = tuple(str(item) for item in catalogue)
        device = str(node_config.get(NODE_DEVICE, "")) or config.device
        config = replace(config, device=device)
        local = load_local_data(str(node_config[NODE_DATA_FILE]), catalogue, config.seed, config.eval_negatives)
        if config.dp == "user-central" and local.split.n_users > 1:
            raise ValueError(f"dp user-central samples devices as users, but this device holds "
                             f"{local.split.n_users} users: run one user per device")
        arrays = _received_arrays(msg, config, len(catalogue))
        state_dir = Path(str(node_config[NODE_STATE_DIR])).expanduser()
        with locked(state_dir):
            saved = load_state(state_dir)
        state = RecordDict()
        vectors, histories = UserVectorStore(state), PrivacyHistoryStore(state)
        same_model = (saved.meta.get("model"), saved.meta.get("dim"), saved.meta.get("catalogue_sha256")) == (
            config.model, config.dim, catalogue_digest(catalogue))
        for index, raw_user in enumerate(local.user_ids):
            if same_model and raw_user in saved.vectors:  # a vector of another model/catalogue is useless
                vectors.save(index, saved.vectors[raw_user])
            if saved.histories.get(raw_user):  # ε spent is never forgotten, whatever the model
                histories.save(index, saved.histories[raw_user])
        data_file = Path(str(node_config[NODE_DATA_FILE])).expanduser().resolve()
        auth_key = Path(str(node_config[NODE_AUTH_KEY])).expanduser() if NODE_AUTH_KEY in node_config else None
        deployed = _Deployed(state_dir, data_file, local, catalogue, saved, auth_key)
        return cls(config, local.split, arrays, vectors, state, deployed)

    def persist(self, server_round: int) -> None:
        """Deployed: write the users' vectors and histories and this global model back, encrypted."""
        if self.deployed is None:
            return
        deployed = self.deployed
        vectors, histories = UserVectorStore(self.state), PrivacyHistoryStore(self.state)
        with locked(deployed.state_dir):
            current = load_state(deployed.state_dir)  # re-read: keep what another writer added
            if (current.meta.get("model"), current.meta.get("dim"), current.meta.get("catalogue_sha256")) != (
                    self.config.model, self.config.dim, catalogue_digest(deployed.catalogue)):
                current.vectors = {}  # another model's vectors cannot be used with this one
            for index, raw_user in enumerate(deployed.local.user_ids):
                local = vectors.load(index)
                if local is not None:
                    current.vectors[raw_user] = local
                history = histories.load(index)
                if history:
                    current.histories[raw_user] = history
            current.global_model = {k: np.asarray(v, dtype=np.float32) for k, v in self.global_arrays.items()}
            current.meta.update({
                "model": self.config.model, "dim": self.config.dim, "seed": self.config.seed,
                "catalogue": list(deployed.catalogue), "catalogue_sha256": catalogue_digest(deployed.catalogue),
                "server_round": server_round, "data_file": str(deployed.data_file),
                "run_config": self.config.to_user_config(),
            })
            save_state(deployed.state_dir, current)


def _save_locals(store: UserVectorStore | CohortVectorStore, users: list[int], locals_: list) -> None:
    """Keep the users' new local parameters (a family without a local part has none to keep)."""
    kept = [(user, local) for user, local in zip(users, locals_) if local]
    if kept:
        store.save_many([user for user, _ in kept], [local for _, local in kept])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training of this node's users; replies with the global-part update."""
    started = time.perf_counter()
    node = _NodeRound.open(msg, context)
    config, split, global_arrays, store = node.config, node.split, node.global_arrays, node.store
    server_round = _server_round(msg)

    _check_central_units(config, context, split.n_users)
    users = _users_this_round(msg, context, split.n_users, config)
    family = family_of(config.model)
    data = [family.user_data(split, user, for_evaluation=False) for user in users]
    if config.dp != "off":
        return _train_private(msg, context, node, data, server_round)
    result = family.train_users(config, global_arrays, store.load_many(users), data, server_round,
                                device=resolve_device(config.device))
    _save_locals(store, result.users, result.locals)
    node.persist(server_round)
    if result.weight > 0:
        update, loss = reply_update(family, result.update_sum, result.weight), result.mean_loss
    else:  # a node without training data contributes nothing (weight 0)
        update = {name: np.zeros_like(value) for name, value in global_arrays.items()}
        loss = 0.0
    metrics = MetricRecord(
        {NUM_EXAMPLES: int(result.weight), TRAIN_LOSS: loss, USERS_TRAINED: len(result.users),
         NODE_SECONDS: time.perf_counter() - started}
    )
    content = RecordDict({ARRAYS: _global_only(update, config, split.n_items), METRICS: metrics})
    return Message(content=content, reply_to=msg)


def _train_private(msg: Message, context: Context, node: _NodeRound, data: list, server_round: int) -> Message:
    """A DP round (:mod:`fedrec.core.privacy.client_round`): each user weighs 1 in the mean.

    The reply carries the (private) mean update, the number of users that trained as
    its weight, and per user what it spent or that it refused; no example counts, no
    training loss and no compute time (``node-seconds`` grows with the user's records),
    which would be releases no accountant covers.
    """
    config, global_arrays, store = node.config, node.global_arrays, node.store
    histories = PrivacyHistoryStore(node.state)
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
    _save_locals(store, result.users, result.locals)
    if config.dp != "user-central":
        for user, history in zip(users, new_histories):
            if history:
                histories.save(user, history)
    node.persist(server_round)
    if result.weight > 0:
        update = reply_update(family_of(config.model), result.update_sum, result.weight)
    else:
        update = {name: np.zeros_like(value) for name, value in global_arrays.items()}
    values = {NUM_EXAMPLES: int(result.weight), USERS_TRAINED: len(result.users)}
    if config.dp == "user-central" and config.adaptive_clip:  # the bits the server noises; nothing else
        values[DP_WITHIN_CLIP] = within_clip
    content = RecordDict({ARRAYS: _global_only(update, config, node.split.n_items), METRICS: MetricRecord(values)})
    if releases:  # (Flower cannot size a ConfigRecord holding empty lists)
        priors = dict(zip(users, prior)) if node.deployed is not None else None
        content[PRIVACY] = _privacy_record(releases, priors, RELEASE_TRAIN,
                                           _countersignatures(msg, context, node, releases, RELEASE_TRAIN))
    return Message(content=content, reply_to=msg)


def _countersignatures(msg: Message, context: Context, node: _NodeRound, releases: list[Release],
                       release: str) -> list[str] | None:
    """A deployed device's signature of each release's ledger row ("" for a refusal), with its
    SuperNode key, so that the server cannot rewrite what the device spent (``fedrec audit
    --device-keys``). None in simulation, without a key, or when the server names no ledger run."""
    deployed = node.deployed
    instruction = msg.content.config_records.get(CONFIG)
    run_id = instruction.get(LEDGER_RUN_ID) if instruction is not None else None
    if deployed is None or deployed.auth_key is None or not isinstance(run_id, str) or not run_id:
        return None
    relation = plan.RELATION[node.config.dp]
    signatures = []
    for r in releases:
        if r.refused:
            signatures.append("")
            continue
        statement = release_statement(run_id, _server_round(msg), f"client:node-{context.node_id}/user-{r.user}",
                                      relation, r.noise_multiplier, r.sample_rate, r.steps, r.epsilon, release)
        signatures.append(sign_release(deployed.auth_key, statement))
    return signatures


def _privacy_record(releases: list[Release], priors: dict[int, list[Step]] | None = None,
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


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Ranking metrics of this node's users under the received global model.

    Under a DP mode the reply is a private release (:mod:`fedrec.core.privacy.evaluation`):
    the sum of the users' metric vectors — each noised on the device and accounted in the
    user's history (record, user-local), or exact for the trusted server to noise
    (user-central) — and the number of users in it; nothing else derived from the data.
    """
    node = _NodeRound.open(msg, context)
    config, split, global_arrays, store = node.config, node.split, node.global_arrays, node.store
    _check_central_units(config, context, split.n_users)

    family = family_of(config.model)
    evaluated = set(family.evaluated_users(split))
    data = [family.user_data(split, user) for user in _users_this_round(msg, context, split.n_users)
            if user in evaluated]
    if config.dp != "off":
        return _evaluate_private(msg, context, node, data)
    stored = store.load_many([d.user for d in data])
    reconstructed = sum(local is None for local in stored)
    rows = family.evaluate_users(config, global_arrays, stored, data, device=resolve_device(config.device))
    node.persist(_server_round(msg))  # a deployed device keeps the newest global model for offline use

    values, weight = family.pool(rows) if rows else ({}, 0.0)
    values = values or {key: 0.0 for key in metric_keys(config.eval_k)}
    metrics = MetricRecord(
        {**values, NUM_EXAMPLES: weight, USERS_EVALUATED: len(rows), USERS_RECONSTRUCTED: reconstructed}
    )
    return Message(content=RecordDict({METRICS: metrics}), reply_to=msg)


def _evaluate_private(msg: Message, context: Context, node: _NodeRound, data: list) -> Message:
    """A DP evaluation reply: the K private metrics summed over the evaluated users, their count,
    and (client-accounted modes) each user's release or refusal, recorded in its history."""
    config, global_arrays, store = node.config, node.global_arrays, node.store
    device = resolve_device(config.device)

    def rows_of(indices: list[int]) -> list[dict[str, float]]:
        chosen = [data[i] for i in indices]
        return family_of(config.model).evaluate_users(config, global_arrays,
                                                      store.load_many([d.user for d in chosen]), chosen,
                                                      device=device)

    users = [d.user for d in data]
    privacy_record = None
    if config.dp == "user-central":
        released = exact_sum(config, rows_of(list(range(len(data)))))
    else:
        histories = PrivacyHistoryStore(node.state)
        prior = histories.load_many(users)
        released = local_private_evaluation(config, users, prior, rows_of)
        for user, old, new in zip(users, prior, released.histories):
            if len(new) != len(old):
                histories.save(user, new)
        if released.releases:  # (Flower cannot size a ConfigRecord holding empty lists)
            priors = dict(zip(users, prior)) if node.deployed is not None else None
            privacy_record = _privacy_record(released.releases, priors, RELEASE_EVALUATE,
                                             _countersignatures(msg, context, node, released.releases,
                                                                RELEASE_EVALUATE))
    node.persist(_server_round(msg))
    keys = plan.private_metric_keys(config.eval_k)
    values: dict[str, float | int] = {key: float(np.float32(v)) for key, v in zip(keys, released.total)}
    values[USERS_EVALUATED] = int(released.count)
    content = RecordDict({METRICS: MetricRecord(values)})
    if privacy_record is not None:
        content[PRIVACY] = privacy_record
    return Message(content=content, reply_to=msg)
