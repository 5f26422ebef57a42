"""How many DP-SGD steps a user's round takes and at which sampling rate (record level).

These are the numbers Opacus itself uses, so the budget check before a round, the σ
derived from ε and the accountant after the round all agree with what ran: Opacus
sets ``q = 1/len(loader)`` for a plain loader of batch ``b`` over ``n`` records, i.e.
``q = 1/⌈n/b⌉`` (``= min(1, b/n)`` when ``b`` divides ``n`` or ``b ≥ n``, a little
smaller otherwise), and its Poisson sampler runs ``⌊1/q⌋`` steps per epoch. A round is
``(user-epochs + local-epochs)·⌊1/q⌋`` steps, all at the same ``(σ, q)``. Kept free of
Opacus imports: the server and the plan need these numbers without training anything.
"""

from __future__ import annotations


def sample_rate(n_records: int, batch_size: int) -> float:
    """Poisson rate ``q = 1/⌈n/b⌉`` of one record per step."""
    if n_records < 1 or batch_size < 1:
        raise ValueError(f"need n_records ≥ 1 and batch_size ≥ 1, got {n_records}, {batch_size}")
    return 1.0 / -(-n_records // batch_size)


def steps_per_epoch(n_records: int, batch_size: int) -> int:
    """Steps of one Poisson "epoch": ``⌊1/q⌋``, as Opacus' sampler counts them (0 without records)."""
    if n_records == 0:
        return 0
    return int(1 / sample_rate(n_records, batch_size))


def steps_per_round(n_records: int, batch_size: int, local_epochs: int, user_epochs: int) -> int:
    """Mechanism steps one round applies to a user with ``n_records`` records (both phases)."""
    if local_epochs < 0 or user_epochs < 0:
        raise ValueError(f"epochs must be ≥ 0, got local_epochs={local_epochs}, user_epochs={user_epochs}")
    return (local_epochs + user_epochs) * steps_per_epoch(n_records, batch_size)
