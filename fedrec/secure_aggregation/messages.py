"""The wire vocabulary: stage names and the keys of every request and reply.

Each stage is one round trip server → every active client → server. A request or reply
is a flat ``dict`` whose values are ``int``, ``bytes``, ``list[int]``, ``list[bytes]`` or a
``numpy`` array — what a Flower ``ConfigRecord`` (scalars and lists) or ``ArrayRecord``
(the masked vector) carries. Node ids are Flower node ids (``uint64``).

======================  ================================  ===================================
stage                   request (server → client u)       reply (u → server)
======================  ================================  ===================================
0 ``setup``             config fields, ``node_ids``,       ``mask_public_key``,
                        ``graph_seed``                     ``encryption_public_key``
1 ``share_keys``        ``key_owner_ids``,                 ``share_recipient_ids``,
                        ``mask_public_keys``,              ``encrypted_shares``
                        ``encryption_public_keys``
                        (u's share group, u included)
2 ``collect_masked``    ``share_sender_ids``,              ``masked_vector``: L entries,
                        ``encrypted_shares`` (for u)       ``uint32`` up to b = 32
3 ``unmask``            ``surviving_ids``,                 ``seed_share_owner_ids``,
                        ``dropped_ids``                    ``seed_shares``,
                                                           ``key_share_owner_ids``,
                                                           ``key_shares``
======================  ================================  ===================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ProtocolViolation

Message = dict[str, Any]

STAGE = "secagg_stage"
SETUP = "setup"
SHARE_KEYS = "share_keys"
COLLECT_MASKED = "collect_masked"
UNMASK = "unmask"
STAGES = (SETUP, SHARE_KEYS, COLLECT_MASKED, UNMASK)

# stage 0
NODE_IDS = "node_ids"
GRAPH_SEED = "graph_seed"
MASK_PUBLIC_KEY = "mask_public_key"
ENCRYPTION_PUBLIC_KEY = "encryption_public_key"
# stage 1
KEY_OWNER_IDS = "key_owner_ids"
MASK_PUBLIC_KEYS = "mask_public_keys"
ENCRYPTION_PUBLIC_KEYS = "encryption_public_keys"
SHARE_RECIPIENT_IDS = "share_recipient_ids"
ENCRYPTED_SHARES = "encrypted_shares"
# stage 2
SHARE_SENDER_IDS = "share_sender_ids"
MASKED_VECTOR = "masked_vector"
# stage 3
SURVIVING_IDS = "surviving_ids"
DROPPED_IDS = "dropped_ids"
SEED_SHARE_OWNER_IDS = "seed_share_owner_ids"
SEED_SHARES = "seed_shares"
KEY_SHARE_OWNER_IDS = "key_share_owner_ids"
KEY_SHARES = "key_shares"


def require(message: Message, key: str, stage: str) -> Any:
    """``message[key]``, or a :class:`ProtocolViolation` naming the stage."""
    if key not in message:
        raise ProtocolViolation(f"SecAgg+ {stage}: the message lacks '{key}'")
    return message[key]


def payload_bytes(value: Any) -> int:
    """Bytes a message carries: byte strings and arrays at their size, ints as 8, strings as UTF-8.

    The payload only — no record framing or protobuf overhead — to compare protocol cost
    with a plain update's ``L × 4`` bytes.
    """
    if isinstance(value, dict):
        return sum(len(str(key).encode()) + payload_bytes(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return sum(payload_bytes(item) for item in value)
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, str):
        return len(value.encode())
    return 8
