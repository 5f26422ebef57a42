"""The fedrec ClientApp (Flower Message API): two thin handlers over a node.

The work is in :mod:`fedrec.client.handlers`, imported inside the handler: Flower starts a
new process for every message on a deployed device, and the SecAgg+ stages after setup
(:mod:`fedrec.client.secagg_stages`) need neither torch nor the models, so their
processes never load them.

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

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedrec.client.secagg_stages import is_setup, stage_reply
from fedrec.protocol.secagg_records import is_secagg

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training of this node's users; replies with the global-part update (under
    ``dp user-distributed``, one SecAgg+ stage: :mod:`fedrec.client.secure_replies`)."""
    if is_secagg(msg.content) and not is_setup(msg):  # keys and masks only: no torch in this process
        return Message(content=stage_reply(msg, context), reply_to=msg)
    from fedrec.client.handlers import train_reply  # torch and the models, only where a model runs

    return train_reply(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The family's metrics of this node's users with held-out data under the received model."""
    from fedrec.client.handlers import evaluate_reply

    return evaluate_reply(msg, context)
