"""The arrays a client receives and sends, checked against what the model family declares.

A client accepts only a global model whose names, shapes, dtype and values match the
family's declared global part (:func:`received_arrays`), and sends only declared global
parameters (:func:`global_only`): a local parameter (a user vector) in a reply is a
``RuntimeError`` before anything leaves the node.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from flwr.app import Array, ArrayRecord, Message

from fedrec.core.arrays import Arrays
from fedrec.core.config.run_config import RunConfig
from fedrec.core.families.base import ModelParts
from fedrec.core.families.registry import family_of
from fedrec.protocol.array_check import array_problem
from fedrec.protocol.wire import ARRAYS


@lru_cache(maxsize=8)
def declared_parts(config: RunConfig, n_items: int) -> ModelParts:
    """The global and local parts the run's family declares; built once per process (a feature
    model with the run's item features: ``W``'s shape is ``(dim, F)``)."""
    return family_of(config.model).parts(config, n_items)


def received_arrays(msg: Message, config: RunConfig, n_items: int) -> Arrays:
    """The global arrays of the instruction, checked against the family's global part."""
    record = msg.content.array_records.get(ARRAYS)
    if record is None:
        raise ValueError(f"instruction carries no ArrayRecord {ARRAYS!r}")
    arrays = {name: array.numpy() for name, array in record.items()}
    parts = declared_parts(config, n_items)
    problem = array_problem(arrays, {name: parts.shapes[name] for name in parts.global_names})
    if problem is not None:
        raise ValueError(f"refusing the received global model: {problem}")
    return {name: value.astype(np.float32, copy=False) for name, value in arrays.items()}


def global_only(update: Arrays, config: RunConfig, n_items: int) -> ArrayRecord:
    """Pack an update, refusing anything that is not a declared global parameter."""
    parts = declared_parts(config, n_items)
    leaked = set(update) - set(parts.global_names)
    if leaked or set(parts.local_names) & set(update):
        raise RuntimeError(f"refusing to send non-global parameters {sorted(leaked)}")
    return ArrayRecord({name: Array(np.ascontiguousarray(update[name])) for name in parts.global_names})


def zero_update(global_arrays: Arrays) -> Arrays:
    """The update of a node none of whose users trained (it weighs 0)."""
    return {name: np.zeros_like(value) for name, value in global_arrays.items()}
