"""Recognising a Ray start-up failure in Flower's log (a fresh runtime is then safe)."""

from __future__ import annotations

from fedrec.simulations.flower_runtime import ray_failed_to_start

INIT_RAY_TRACE = """ERROR :     Traceback (most recent call last):
  File ".../flwr/server/superlink/fleet/vce/backend/raybackend.py", line 119, in init_ray
    ray.init(
  File ".../ray/_private/node.py", line 763, in _init_gcs_client
FileNotFoundError: [Errno 2] No such file or directory: '.../logs/gcs_server.err'
"""

PORT_FILE_TIMEOUT = "Exception: Timed out waiting for file /tmp/x/ray/session_1/gcs_server_port_abc."

CLIENT_CRASH = """ERROR :     Traceback (most recent call last):
  File ".../fedrec/client/app.py", line 120, in train
ValueError: refusing the received global model: item_embedding.weight has NaN
"""


def test_a_traceback_through_init_ray_is_a_start_failure() -> None:
    assert ray_failed_to_start(INIT_RAY_TRACE)


def test_the_gcs_port_file_timeout_is_a_start_failure() -> None:
    assert ray_failed_to_start(PORT_FILE_TIMEOUT)


def test_a_client_crash_is_not_retried_as_a_start_failure() -> None:
    assert not ray_failed_to_start(CLIENT_CRASH)
    assert not ray_failed_to_start("")


def test_the_gcs_port_lies_below_the_ephemeral_range_and_is_free() -> None:
    import random
    import socket

    from fedrec.runtime.processes import _ephemeral_range, free_listening_port

    low, _ = _ephemeral_range()
    rng = random.Random(4)
    for _ in range(20):
        port = free_listening_port(rng)
        assert 1024 <= port < low
        with socket.socket() as sock:
            sock.bind(("0.0.0.0", port))  # still free
