"""What a ClientApp handler works on: one node's users, their state and the received model.

Two kinds of node sit behind one interface (:class:`Node`):

* a **simulated node** (``fedrec simulate``): Flower's ``partition-id`` / ``num-partitions``
  deal it the users ``{u : u mod P = p}`` of the run's split; its users' local parameters
  and accountant histories live in Flower's node state (:class:`SimulatedNode`);
* a **deployed device** (``fedrec client start``): its users are its CSV's, read against
  the server's item catalogue; its state is decrypted before the handler and written back
  after it (:class:`fedrec.client.deployed_node.DeployedDevice`).

A handler asks the node which users take part this round (:meth:`Node.users_this_round`),
reads and writes their local parameters through :attr:`Node.store` and their histories
through :attr:`Node.histories`, and calls :meth:`Node.persist` at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import Context, Message, MessageType, RecordDict

from fedrec.client.model_arrays import declared_parts, received_arrays
from fedrec.client.partition import node_users
from fedrec.client.privacy_state import PrivacyHistoryStore
from fedrec.client.state import CohortVectorStore, UserVectorStore
from fedrec.core.arrays import Arrays
from fedrec.core.config.run_config import RunConfig
from fedrec.core.families.registry import family_of
from fedrec.core.privacy.mechanisms import poisson_sample
from fedrec.protocol.wire import CONFIG, NODE_DATA_FILE, SAMPLED_USERS, SERVER_ROUND


def server_round(msg: Message) -> int:
    """The round an instruction belongs to (0 when it does not say)."""
    config = msg.content.config_records.get(CONFIG)
    return int(config.get(SERVER_ROUND, 0)) if config is not None else 0


@dataclass(frozen=True)
class Node:
    """A node's side of one round: config, its data split, the global arrays, its state."""

    config: RunConfig
    split: Any
    global_arrays: Arrays
    store: UserVectorStore | CohortVectorStore
    state: RecordDict

    @property
    def histories(self) -> PrivacyHistoryStore:
        """Each user's accountant history (never reset)."""
        return PrivacyHistoryStore(self.state)

    @property
    def deployed(self) -> bool:
        return False

    def users_this_round(self, msg: Message) -> list[int]:
        """The users of this node that take part in the instruction's round."""
        raise NotImplementedError

    def persist(self, round_: int) -> None:
        """Keep what the round changed beyond the handler (nothing for a simulated node)."""

    def countersignatures(self, msg: Message, releases: list, release: str) -> list[str] | None:
        """The node's signatures of its ledger rows (a deployed device with a key), else ``None``."""
        return None


@dataclass(frozen=True)
class SimulatedNode(Node):
    """A simulated node holding the users ``{u : u mod P = p}`` of the run's split."""

    node_config: Any = None

    @classmethod
    def open(cls, msg: Message, context: Context, config: RunConfig) -> "SimulatedNode":
        split = family_of(config.model).load_split(config)
        arrays = received_arrays(msg, config, split.n_items)
        node = cls(config, split, arrays, _vector_store(context, config, split), context.state, context.node_config)
        node.check_central_units()
        return node

    def held(self) -> list[int]:
        return node_users(self.node_config, self.split.n_users)

    def users_this_round(self, msg: Message) -> list[int]:
        """The node's users, or (cohort executor) those of them the server sampled.

        Under user-central DP with the cohort executor the node samples its own users by
        Poisson, ``q = clients-per-round / n``, from a SecureRandom (ChaCha20, OS key): no
        list of sampled users travels, so no node learns who else took part (the
        amplification needs that).
        """
        held, n_users, config = self.held(), self.split.n_users, self.config
        if (config.dp == "user-central" and config.executor == "cohort"
                and msg.metadata.message_type == MessageType.TRAIN):
            return poisson_sample(held, min(1.0, config.clients_per_round / n_users))
        instruction = msg.content.config_records.get(CONFIG)
        if instruction is None or SAMPLED_USERS not in instruction:
            return held
        sampled = instruction[SAMPLED_USERS]
        if not isinstance(sampled, list) or not all(isinstance(u, int) and 0 <= u < n_users for u in sampled):
            raise ValueError(f"{SAMPLED_USERS} must be a list of user ids in 0..{n_users - 1}")
        chosen = set(sampled)
        return [user for user in held if user in chosen]

    def check_central_units(self) -> None:
        """user-central with the per-client executor samples nodes as users: a node holding
        several users would release them together (sensitivity ``w·C``, not ``C``), so it refuses."""
        if self.config.dp != "user-central" or self.config.executor == "cohort":
            return
        held = self.held()
        if len(held) > 1:
            raise ValueError(f"dp user-central samples nodes as users, but this node holds {len(held)} users "
                             f"(partition {self.node_config.get('partition-id')} of "
                             f"{self.node_config.get('num-partitions')}): the server's noise covers one user "
                             "per sampled node; run one user per node or --executor cohort")


def _vector_store(context: Context, config: RunConfig, split: Any) -> UserVectorStore | CohortVectorStore:
    """Where a simulated node keeps its users' local parameters: a record per user, or stacked (cohort)."""
    if config.executor != "cohort":
        return UserVectorStore(context.state)
    parts = declared_parts(config, split.n_items)
    held = node_users(context.node_config, split.n_users)
    return CohortVectorStore(context.state, held, {name: parts.shapes[name] for name in parts.local_names})


def open_node(msg: Message, context: Context) -> Node:
    """The node a handler works on: a deployed device when the node config names a data file."""
    torch.set_num_threads(1)  # one core per simulated client; Ray runs several at once
    config = RunConfig.from_user_config(context.run_config)
    if NODE_DATA_FILE in context.node_config:
        from fedrec.client.deployed_node import DeployedDevice

        return DeployedDevice.open(msg, context, config)
    return SimulatedNode.open(msg, context, config)
