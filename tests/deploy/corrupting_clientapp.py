"""A ClientApp that trains like fedrec's and then corrupts its update (tests only).

The node config key ``corrupt`` picks what goes wrong: ``nan`` (a NaN in the first
array), ``shape`` (the first array loses a row), ``dtype`` (float64 arrays). Without the
key the node behaves exactly like fedrec's ClientApp.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp import ClientApp

from fedrec.client import app as fedrec_app
from fedrec.protocol.wire import ARRAYS

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    reply = fedrec_app.train(msg, context)
    mode = str(context.node_config.get("corrupt", ""))
    if not mode:
        return reply
    arrays = {name: array.numpy().copy() for name, array in reply.content.array_records[ARRAYS].items()}
    first = next(iter(arrays))
    if mode == "nan":
        arrays[first].flat[0] = np.nan
    elif mode == "shape":
        arrays[first] = arrays[first][:-1]
    elif mode == "dtype":
        arrays = {name: value.astype(np.float64) for name, value in arrays.items()}
    else:
        raise ValueError(f"unknown corruption {mode!r}")
    reply.content[ARRAYS] = ArrayRecord({name: Array(np.ascontiguousarray(v)) for name, v in arrays.items()})
    return reply


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return fedrec_app.evaluate(msg, context)
