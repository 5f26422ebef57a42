"""A SecAgg+ round of ``dp user-distributed`` with the real server module and the real
ClientApp stage handler, the transport replaced by a function call (no Ray, no SuperLink).

:class:`FakeFlower` plays ``send_and_receive``: it hands each message to
:func:`fedrec.client.secure_replies.secure_train_reply` with that node's own
:class:`flwr.app.Context` (kept across the stages, as Flower keeps a node's state), and
returns the replies — minus those of the nodes a test makes drop before a stage. It records
every reply's content and every node's encoded update ``z_u`` (read from the node's state
after setup: it never travels) so a test can compare them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from fedrec.client.secagg_stages import INPUT, INPUT_KEY
from fedrec.client.secure_replies import secure_train_reply
from fedrec.core.config.run_config import RunConfig
from fedrec.core.families.registry import family_of
from fedrec.core.federation.server_step import initial_global
from fedrec.core.privacy.distributed_mode import RunPlan, rotation_seed
from fedrec.protocol.distributed_plan import flower_run_plan
from fedrec.protocol.secagg_records import from_content
from fedrec.protocol.wire import ARRAYS, CONFIG, SERVER_ROUND
from fedrec.secure_aggregation import messages as msg
from fedrec.server.secure_rounds import SecureRound, run_secure_round
from fedrec.server.strategy.fedopt_updates import numpy_to_arrays

NODE_BASE = 1_000  # node ids 1000, 1001, … (partition p is node 1000 + p)


def small_config(**overrides: Any) -> RunConfig:
    values = dict(dataset="synthetic-8", model="mf", rounds=2, clients_per_round=8, dim=4, eval_every=2,
                  executor="per-client", dp="user-distributed", epsilon=8.0, clip=1.0, lr=0.5,
                  client_optimizer="sgd", server_lr=1.0)
    values.update(overrides)
    return RunConfig(**values)


@dataclass
class _Reply:
    """What the server module reads of a reply (the duck type of a Flower reply ``Message``)."""

    node: int
    content: RecordDict

    @property
    def metadata(self) -> Any:
        return type("Metadata", (), {"src_node_id": self.node})()

    def has_error(self) -> bool:
        return False

    def has_content(self) -> bool:
        return True


@dataclass
class FakeFlower:
    config: RunConfig
    #: stage → nodes that stop answering from that stage on
    drop_before: Mapping[str, Collection[int]] = field(default_factory=dict)
    contexts: dict[int, Context] = field(default_factory=dict)
    replies: list[tuple[str, int, RecordDict]] = field(default_factory=list)
    encoded: dict[int, np.ndarray] = field(default_factory=dict)
    stages_sent: list[str] = field(default_factory=list)
    #: called with (node, its context) after its setup reply: a test can make a node misbehave
    after_setup: Any = None

    def context(self, node: int) -> Context:
        if node not in self.contexts:
            n_users = int(self.config.dataset.split("-")[1])
            self.contexts[node] = Context(
                run_id=1, node_id=node, state=RecordDict(), run_config=self.config.to_user_config(),
                node_config={"partition-id": node - NODE_BASE, "num-partitions": n_users})
        return self.contexts[node]

    def send(self, grid: Any, messages: list[Message], timeout: float) -> list[_Reply]:
        silent: set[int] = set()
        stage = ""
        out = []
        for message in messages:
            request, _ = from_content(message.content)
            stage = request[msg.STAGE]
            for later in msg.STAGES[: msg.STAGES.index(stage) + 1]:
                silent.update(self.drop_before.get(later, ()))
            node = int(message.metadata.dst_node_id)
            if node in silent:
                continue
            content = secure_train_reply(message, self.context(node))
            if stage == msg.SETUP:
                self.encoded[node] = self.contexts[node].state.array_records[INPUT_KEY][INPUT].numpy().copy()
                if self.after_setup is not None:
                    self.after_setup(node, self.contexts[node])
            self.replies.append((stage, node, content))
            out.append(_Reply(node, content))
        self.stages_sent.append(stage)
        return out


def instructions(config: RunConfig, arrays: dict[str, np.ndarray], nodes: list[int],
                 server_round: int) -> list[Message]:
    """The round's train instructions, as the strategy builds them."""
    return [Message(content=RecordDict({ARRAYS: numpy_to_arrays(arrays),
                                        CONFIG: ConfigRecord({SERVER_ROUND: server_round})}),
                    dst_node_id=node, message_type=MessageType.TRAIN) for node in nodes]


def one_round(config: RunConfig, fake: FakeFlower, server_round: int = 1,
              observe: Any = None) -> tuple[SecureRound, RunPlan, dict[str, np.ndarray]]:
    split = family_of(config.model).load_split(config)
    arrays = initial_global(config, split)
    run = flower_run_plan(config, arrays, split.n_users)
    nodes = [NODE_BASE + p for p in range(split.n_users)][: config.clients_per_round]
    result = run_secure_round(None, instructions(config, arrays, nodes, server_round), run, server_round,
                              rotation_seed(config.seed, server_round), 60.0, fake.send, observe_vector=observe)
    return result, run, arrays


def array_records(content: RecordDict) -> list[ArrayRecord]:
    return list(content.array_records.values())
