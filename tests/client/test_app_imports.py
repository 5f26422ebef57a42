"""The SecAgg+ stages after setup run through the real ClientApp without loading torch.

On a deployed device Flower starts one ClientApp process per message, so what a stage
imports is paid by every device at every stage; torch alone is seconds of CPU. This runs
a whole three-node round (setup by the protocol's client, the three later stages through
``fedrec.client.app``'s train handler) in a fresh interpreter and fails if torch or the
model code was imported, or if the unmasked sum is not the sum of the inputs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys

    import numpy as np
    from flwr.app import Context, Message, MessageType, RecordDict

    from fedrec.client import app as client_app
    from fedrec.client.secagg_stages import save_client, store_input
    from fedrec.protocol.secagg_records import from_content, to_content
    from fedrec.secure_aggregation.client import SecAggClient
    from fedrec.secure_aggregation.config import SecAggConfig
    from fedrec.secure_aggregation.server import SecAggServer

    nodes = [11, 12, 13]
    config = SecAggConfig(num_clients=3, neighbourhood_size=2, threshold=2, modulus_bits=20, vector_length=6)
    server = SecAggServer(config, nodes)
    inputs = {node: np.arange(6, dtype=np.uint64) * node for node in nodes}
    contexts = {}
    setup_replies = {}
    for node, request in server.setup_requests().items():  # setup: what the model-side handler does
        client = SecAggClient(node)
        setup_replies[node] = client.setup(request)
        context = Context(run_id=1, node_id=node, state=RecordDict(), run_config={}, node_config={})
        store_input(context, inputs[node].astype(np.int64), config.modulus)
        save_client(context, client, 1)
        contexts[node] = context
    server.receive_public_keys(setup_replies)

    def through_app(requests):
        replies = {}
        for node, request in requests.items():
            message = Message(content=to_content(request, 1), dst_node_id=node, message_type=MessageType.TRAIN)
            reply = client_app.train(message, contexts[node])
            replies[node], _ = from_content(reply.content)
        return replies

    server.receive_encrypted_shares(through_app(server.share_keys_requests()))
    server.receive_masked_vectors(through_app(server.masked_vector_requests()))
    total = server.receive_unmask_shares(through_app(server.unmask_requests()))
    expected = sum(inputs.values()) % config.modulus
    assert np.array_equal(np.asarray(total, dtype=np.uint64), expected), (total, expected)
    heavy = sorted(name for name in sys.modules if name == "torch" or name.startswith(("fedrec.core.models",
                                                                                       "fedrec.client.handlers")))
    print("HEAVY", heavy)
    sys.exit(1 if heavy else 0)
""")


def test_later_secagg_stages_import_no_torch() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "HEAVY []" in done.stdout


def test_a_training_message_does_import_the_model_code() -> None:
    """The check above can fail: the same probe sees torch once a handler needs a model."""
    probe = ("import sys\nfrom fedrec.client import app\nimport fedrec.client.handlers\n"
             "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr
