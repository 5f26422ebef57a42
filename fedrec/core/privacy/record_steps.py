"""How many DP-SGD steps a user's round takes and at which sampling rate (record level).

A user with ``n`` training records samples each record independently with rate
``q = min(1, batch / n)`` at every step (Poisson sampling, expected batch ``q·n``);
an epoch is ``⌈1/q⌉`` steps, so a round of ``user-epochs + local-epochs`` epochs is
``(user-epochs + local-epochs)·⌈1/q⌉`` steps. Both the client (before training, to
check its budget) and the server (to choose σ and check δ) need these numbers.
"""

from __future__ import annotations

import math


def record_sample_rate(n_records: int, batch_size: int) -> float:
    if n_records < 1 or batch_size < 1:
        raise ValueError(f"need n_records ≥ 1 and batch_size ≥ 1, got {n_records}, {batch_size}")
    return min(1.0, batch_size / n_records)


def record_steps_per_round(n_records: int, batch_size: int, local_epochs: int, user_epochs: int) -> int:
    q = record_sample_rate(n_records, batch_size)
    return (local_epochs + user_epochs) * math.ceil(1 / q - 1e-12)
