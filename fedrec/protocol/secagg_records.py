"""SecAgg+ messages (plain dicts, :mod:`fedrec.secure_aggregation.messages`) as Flower records.

A stage's request or reply travels in one ``RecordDict``: every scalar, byte string and
list under the ConfigRecord :data:`SECAGG`, every numpy array (only the masked vector
``y_u``) under the ArrayRecord :data:`SECAGG_ARRAYS`. Flower cannot size a ConfigRecord
holding an empty list, so empty lists are left out and their keys listed under
:data:`EMPTY_LISTS`; :func:`from_content` puts them back. Round trip guarantee:
``from_content(to_content(m)) == m`` for every message the state machines produce
(lists come back as lists, arrays as arrays of the same dtype).

:data:`SECAGG` also marks an instruction as a SecAgg+ stage: the ClientApp's train
handler dispatches on its presence (:mod:`fedrec.client.secure_replies`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

SECAGG = "secagg"  # ConfigRecord: the stage's message (and the stage name, messages.STAGE)
SECAGG_ARRAYS = "secagg-arrays"  # ArrayRecord: the stage's numpy arrays (the masked vector)
SECAGG_ROUND = "secagg-round"  # the server round the stage belongs to (in SECAGG)
EMPTY_LISTS = "secagg-empty-lists"  # keys whose value is an empty list


def to_content(message: dict[str, Any], server_round: int) -> RecordDict:
    """``message`` (one stage's request or reply) as a ``RecordDict``; raises ``TypeError``
    for a value no Flower record can carry."""
    config: dict[str, Any] = {SECAGG_ROUND: int(server_round)}
    arrays: dict[str, Array] = {}
    empty: list[str] = []
    for key, value in message.items():
        if key in (SECAGG_ROUND, EMPTY_LISTS):
            raise ValueError(f"'{key}' is reserved for the record framing")
        if isinstance(value, np.ndarray):
            arrays[key] = Array(np.ascontiguousarray(value))
        elif isinstance(value, (list, tuple)):
            if value:
                config[key] = [int(v) if isinstance(v, (int, np.integer)) else v for v in value]
            else:
                empty.append(key)
        else:
            config[key] = int(value) if isinstance(value, np.integer) else value
    if empty:
        config[EMPTY_LISTS] = empty
    content = RecordDict({SECAGG: ConfigRecord(config)})
    if arrays:
        content[SECAGG_ARRAYS] = ArrayRecord(arrays)
    return content


def is_secagg(content: RecordDict) -> bool:
    """Whether ``content`` is a SecAgg+ stage message."""
    return SECAGG in content.config_records


def from_content(content: RecordDict) -> tuple[dict[str, Any], int]:
    """The stage message and its round from a ``RecordDict`` built by :func:`to_content`;
    ``ValueError`` when it is not one."""
    record = content.config_records.get(SECAGG)
    if record is None:
        raise ValueError(f"not a SecAgg+ message: no '{SECAGG}' record")
    server_round = record.get(SECAGG_ROUND)
    if not isinstance(server_round, int) or isinstance(server_round, bool):
        raise ValueError(f"a SecAgg+ message names its round under '{SECAGG_ROUND}'")
    message: dict[str, Any] = {key: value for key, value in record.items() if key not in (SECAGG_ROUND, EMPTY_LISTS)}
    empty = record.get(EMPTY_LISTS, [])
    if not isinstance(empty, list) or not all(isinstance(key, str) for key in empty):
        raise ValueError(f"'{EMPTY_LISTS}' must list key names")
    message.update({key: [] for key in empty})
    arrays = content.array_records.get(SECAGG_ARRAYS)
    if arrays is not None:
        message.update({key: array.numpy() for key, array in arrays.items()})
    return message, server_round
