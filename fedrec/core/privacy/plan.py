"""What each DP mode protects, its unit, and how its noise multiplier σ is chosen.

========== ======= ============================================================
mode       unit    mechanism (all Gaussian, accounted as Poisson-subsampled)
========== ======= ============================================================
record     record  DP-SGD on the client (Opacus): each example's gradient over all
                   trained parameters (user vector included) clipped to ``C``,
                   ``N(0, σ²C²)`` added to the sum; records sampled by Poisson at
                   ``q = min(1, batch / n_records)``; the client's own accountant
                   composes every step of every round it takes part in.
user-local user    each client clips its update to ``C`` and adds ``N(0, σ²C²)``
                   before it leaves the device (the server is not trusted). The
                   client accounts ``q = 1``: it cannot rely on the server's
                   sampling being secret, so no amplification.
user-central user  each client clips its update to ``C`` (on the client: the server
                   never sees an unclipped one); the server adds ``N(0, σ²C²)`` to
                   the sum, which it divides by the *expected* number of sampled
                   units ``q·n`` (not the realised one, which would leak). Units are
                   sampled by **Poisson** with ``q = clients-per-round / n`` by the
                   server itself from OS entropy (Flower's own sampling draws a
                   fixed number without replacement, which the Poisson accountants
                   do not describe). One server accountant: ``(σ, q, 1)`` per round.
========== ======= ============================================================

σ from ε: with ``--epsilon`` and no ``--noise-multiplier``, σ is the smallest that
keeps a unit taking part in **every** round within ε after ``rounds`` rounds
(conservative: a sampled client usually takes part in fewer; its accountant shows
what it really spent). For the client-accounted modes (``record``, ``user-local``)
``--dp-participations P`` plans σ for ``P`` rounds per client instead; a client sampled
more often refuses to train once the next round would exceed its budget. With both, ε is a budget that σ must be able to meet: if σ
cannot keep a full run within ε (the median user, for ``record``), the run is refused
at start. With σ alone, ε is tracked and reported, no budget.

δ must be below ``1/n`` for ``n`` units: records of the largest user (``record``, whose
guarantee is about that user's records) or users (``user-*``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from fedrec.core.privacy.accounting import epsilon, noise_for_epsilon
from fedrec.core.privacy.record_steps import sample_rate as record_sample_rate, steps_per_round as record_steps_per_round
from fedrec.core.run_config import RunConfig

if TYPE_CHECKING:
    from fedrec.core.data.split import LeaveOneOutSplit

UNIT = {"record": "record", "user-local": "user", "user-central": "user"}


def record_noise(config: RunConfig, n_records: int) -> float:
    """σ of a user with ``n_records`` training records (``record`` mode)."""
    if config.noise_multiplier > 0:
        return config.noise_multiplier
    q = record_sample_rate(n_records, config.batch_size)
    steps = planned_participations(config) * record_steps_per_round(n_records, config.batch_size,
                                                                    config.local_epochs, config.user_epochs)
    return noise_for_epsilon(config.epsilon, config.delta, q, steps, config.accountant)


def local_noise(config: RunConfig) -> float:
    """σ of a ``user-local`` client's release (one Gaussian mechanism per round taken part in)."""
    if config.noise_multiplier > 0:
        return config.noise_multiplier
    return noise_for_epsilon(config.epsilon, config.delta, 1.0, planned_participations(config), config.accountant)


def planned_participations(config: RunConfig) -> int:
    """Rounds a client's σ is planned for (record, user-local): ``dp-participations`` or all."""
    return config.dp_participations or config.rounds


def central_rate(config: RunConfig, n_units: int) -> float:
    """Poisson rate ``q = clients-per-round / n`` of ``user-central`` sampling."""
    if n_units < 1:
        raise ValueError("user-central needs at least one client")
    return min(1.0, config.clients_per_round / n_units)


def central_noise(config: RunConfig, n_units: int) -> float:
    """σ of the server's noise on the sum of clipped updates (``user-central``)."""
    if config.noise_multiplier > 0:
        return config.noise_multiplier
    return noise_for_epsilon(config.epsilon, config.delta, central_rate(config, n_units), config.rounds,
                             config.accountant)


def budget(config: RunConfig) -> float | None:
    return config.epsilon if config.dp != "off" and config.epsilon > 0 else None


def check_against_data(config: RunConfig, n_units: int, records_per_user: Sequence[int] | None = None) -> None:
    """Refuse a DP configuration that the data makes meaningless; say which and why.

    ``n_units`` is the number of users (clients); ``records_per_user`` the training
    records of each user (needed for ``record``).
    """
    if config.dp == "off":
        return
    if config.dp == "record":
        if not records_per_user:
            raise ValueError("dp record needs the users' record counts to check δ")
        counts = np.asarray([c for c in records_per_user if c > 0])
        n, what = int(counts.max()), "records of the largest user"
    else:
        n, what = n_units, "users"
    if not config.delta < 1 / n:
        raise ValueError(f"delta={config.delta:g} must be below 1/n = {1 / n:.3g} (n = {n} {what}): "
                         "a larger δ allows releasing some unit's data outright")
    if config.epsilon > 0 and config.noise_multiplier > 0:
        spent = planned_epsilon(config, n_units, records_per_user)
        if spent > config.epsilon * (1 + 1e-9):
            raise ValueError(
                f"noise-multiplier {config.noise_multiplier:g} and epsilon {config.epsilon:g} disagree: "
                f"{planned_participations(config) if config.dp != 'user-central' else config.rounds} rounds "
                f"at σ={config.noise_multiplier:g} spend ε={spent:.3g} "
                f"({config.accountant}, δ={config.delta:g}{', median user' if config.dp == 'record' else ''}); "
                "raise σ, lower the rounds, or give only one of the two")


def planned_epsilon(config: RunConfig, n_units: int, records_per_user: Sequence[int] | None = None) -> float:
    """ε after a full run for a unit taking part in every planned round (the median user for ``record``)."""
    rounds = planned_participations(config) if config.dp in ("record", "user-local") else config.rounds
    if config.dp == "record":
        counts = [c for c in (records_per_user or []) if c > 0]
        n_records = int(np.median(counts))
        sigma = record_noise(config, n_records)
        q = record_sample_rate(n_records, config.batch_size)
        steps = rounds * record_steps_per_round(n_records, config.batch_size, config.local_epochs,
                                                config.user_epochs)
        return epsilon([(sigma, q, steps)], config.delta, config.accountant)
    if config.dp == "user-local":
        return epsilon([(local_noise(config), 1.0, rounds)], config.delta, config.accountant)
    if config.dp == "user-central":
        return epsilon([(central_noise(config, n_units), central_rate(config, n_units), rounds)],
                       config.delta, config.accountant)
    return 0.0


def preflight(config: RunConfig, split: "LeaveOneOutSplit") -> str:
    """Check the DP configuration against the data (raises ``ValueError``); describe it."""
    n_users = split.n_users
    records = [len(split.train_items_of(u)) for u in range(n_users)] if config.dp == "record" else None
    check_against_data(config, n_users, records)
    return describe(config, n_users, records)


def describe(config: RunConfig, n_units: int, records_per_user: Sequence[int] | None = None) -> str:
    """One line saying what is private, printed at the start of a run."""
    if config.dp == "off":
        return "dp off: nothing is private — updates leave clients unclipped and un-noised"
    target = f"budget ε={config.epsilon:g}" if config.epsilon > 0 else "no budget"
    if config.dp == "record":
        counts = [c for c in (records_per_user or []) if c > 0]
        sigma = (f"σ={config.noise_multiplier:g}" if config.noise_multiplier > 0
                 else f"σ per user from ε (median user σ={record_noise(config, int(np.median(counts))):.3g})")
        where = "each client (Opacus DP-SGD, Poisson-sampled records)"
    elif config.dp == "user-local":
        sigma, where = f"σ={local_noise(config):.3g}", "each client on its own clipped update"
    else:
        sigma = f"σ={central_noise(config, n_units):.3g}, q={central_rate(config, n_units):.3g}"
        where = "the server on the sum of clients' clipped updates (Poisson-sampled clients)"
    return (f"dp {config.dp}: unit = {UNIT[config.dp]}, noise by {where}; {sigma}, C={config.clip:g}, "
            f"δ={config.delta:g}, {target}, accountant {config.accountant}; "
            f"ε after {planned_participations(config) if config.dp != 'user-central' else config.rounds} "
            "rounds of participation ≤ "
            f"{planned_epsilon(config, n_units, records_per_user):.3g}")
