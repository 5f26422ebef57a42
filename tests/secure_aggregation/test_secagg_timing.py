"""Cost of one round at the size of our MF update: n = 100 clients, L = 55,506, b = 20 bits.

Measured in process, every client one after another on one core: the client figure is the
sum over all 100 clients, so one device spends about a hundredth of it. Run with ``-s`` to
see the breakdown.
"""

from __future__ import annotations

import time

import numpy as np

from fedrec.secure_aggregation import SecAggConfig, run_round
from fedrec.secure_aggregation import messages as msg

N, LENGTH, BITS = 100, 55_506, 20
# SecAgg+ neighbourhood: 20 neighbours, threshold 11 of a share group of 21 (10 dropouts per group tolerated)
K, T = 20, 11
SECONDS_ALLOWED = 90.0  # measured ≈ 7 s on a shared 2-core machine; minutes would mean a regression


def test_a_round_of_100_clients_with_55506_entries_takes_seconds() -> None:
    config = SecAggConfig(num_clients=N, neighbourhood_size=K, threshold=T, modulus_bits=BITS, vector_length=LENGTH)
    rng = np.random.default_rng(0)
    inputs = {node: rng.integers(0, 1 << BITS, LENGTH, dtype=np.uint64) for node in range(N)}
    ids = sorted(inputs)
    started = time.perf_counter()
    result = run_round(config, inputs, drop_before={msg.COLLECT_MASKED: ids[10:15], msg.UNMASK: ids[20:25]})
    elapsed = time.perf_counter() - started

    survivors = [node for node in ids if node not in ids[10:15]]
    assert result.survivors == tuple(survivors)
    expected = np.sum([inputs[node] for node in survivors], axis=0, dtype=np.uint64) % np.uint64(1 << BITS)
    np.testing.assert_array_equal(result.total, expected)
    print(f"\nSecAgg+ n={N} k={K} t={T} L={LENGTH} b={BITS}, 5 dropped before masking, 5 before unmasking: "
          f"{elapsed:.2f} s in all")
    print("  server s/stage:", {stage: round(s, 2) for stage, s in result.server_seconds.items()})
    print("  all clients s/stage:", {stage: round(s, 2) for stage, s in result.client_seconds.items()})
    sent = {stage: round(b / N / 1024, 1) for stage, b in result.bytes_to_clients.items()}
    received = {stage: round(b / N / 1024, 1) for stage, b in result.bytes_from_clients.items()}
    plain_kib = LENGTH * 4 / 1024
    print(f"  KiB per sampled client, server→client: {sent}; client→server: {received}; "
          f"a plain float32 update is {plain_kib:.1f} KiB")
    # the masked vector travels as uint32: no bigger than the plain float32 update it replaces
    assert result.bytes_from_clients[msg.COLLECT_MASKED] <= (N - 5) * (LENGTH * 4 + 64)
    assert elapsed < SECONDS_ALLOWED
