"""A Flower Grid whose nodes are the ClientApp's handlers, called in this process (no
Flower or Ray processes): the server loop runs against it as against a real grid."""

from __future__ import annotations

import itertools
from typing import Callable

from flwr.app import Context, Message, MessageType, RecordDict

from fedrec.client import app as client_app
from fedrec.core.config.run_config import RunConfig


class InProcessGrid:
    """Nodes ``node_ids``; node ``n`` gets ``node_config(n)`` and its own state."""

    def __init__(self, config: RunConfig, node_ids: list[int], node_config: Callable[[int], dict]) -> None:
        self.config, self.node_ids, self.node_config = config, node_ids, node_config
        self.contexts: dict[int, Context] = {}
        self.replies: dict[str, Message] = {}
        self.ids = itertools.count()
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def _context(self, node: int) -> Context:
        if node not in self.contexts:
            self.contexts[node] = Context(run_id=1, node_id=node, state=RecordDict(),
                                          node_config=self.node_config(node), run_config=self.config.to_user_config())
        return self.contexts[node]

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = []
        for message in messages:
            message_id = f"m{next(self.ids)}"
            message.metadata.__dict__["_message_id"] = message_id
            node = message.metadata.dst_node_id
            handler = client_app.train if message.metadata.message_type == MessageType.TRAIN else client_app.evaluate
            reply = handler(message, self._context(node))
            reply.metadata.__dict__["_src_node_id"] = node
            reply.metadata.__dict__["_reply_to_message_id"] = message_id
            self.replies[message_id] = reply
            self.sent.append(reply)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: list[str]) -> list[Message]:
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]
