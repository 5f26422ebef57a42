"""The fedrec ClientApp (Flower Message API): two thin handlers over a node.

The work is in :mod:`fedrec.client.handlers`, imported inside the handler: Flower starts a
new process for every message on a deployed device, and the SecAgg+ stages after setup
(:mod:`fedrec.client.secagg_stages`) need neither torch nor the models, so their
processes never load them.

``train`` replies with the update of the global part only (never a local parameter);
``evaluate`` with the pooled metrics of the node's users: what each does, and under which
DP layer, is described in :mod:`fedrec.client.handlers`.
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
