"""What each DP mode protects, against whom, under which neighbouring relation, and how
its noise multipliers are chosen.

============ ====== =========== ======================================================
mode         unit   relation    mechanism (all Gaussian)
============ ====== =========== ======================================================
record       record add/remove  DP-SGD on the client (Opacus): each example's gradient
                                over all trained parameters (user vector included)
                                clipped to ``C``, ``N(0, σ²C²)`` added to the sum, which
                                is divided by the public ``batch-size``; records sampled
                                by Poisson at the **public** ``q = record-sample-rate``,
                                ``⌈1/q⌉`` steps an epoch. Nothing in the mechanism depends
                                on the user's record count ``n``, so a dataset with one
                                record more or less is a meaningful neighbour (a q, step
                                count or divisor derived from ``n`` would reveal ``n``, and
                                add/remove would then not describe what an adversary sees).
user-local   user   replace-one each client clips its update to ``C`` and adds ``N(0, σ²C²)``
                                before it leaves the device. The adversary (the server, or
                                anyone who reads a reply) sees **one user's** release alone,
                                so the neighbours are two datasets of the same user: the
                                updates can be ``2C`` apart (sensitivity ``2C``). Accounted
                                as the Gaussian mechanism with ``σ/2``, ``q = 1`` (the
                                client cannot rely on the server's sampling being secret).
user-central user   add/remove  each client clips its update to ``C``; the trusted server
                                adds ``N(0, σ²C²)`` to the sum, divided by the *expected*
                                number of sampled users ``q·n``; users sampled by Poisson
                                with ``q = clients-per-round / n`` from a CSPRNG (by the
                                server, or by each node for its own users). Adversary:
                                whoever sees the released models and files, not the server.
user-        user   zero-out    every sampled client clips its update to ``C``, quantises
distributed                     it and adds its own discrete Gaussian noise share; the
                                server sees only the sum mod ``2^bits`` (secure
                                aggregation), divided by the number sampled. zCDP
                                accounting of KLS21, no amplification:
                                :mod:`fedrec.core.privacy.distributed_mode` (the round
                                driver only, so far). Adversary: an honest-but-curious
                                server seeing only the modular sums.
============ ====== =========== ======================================================

Evaluation releases. Under every DP mode an evaluation reply releases, per user, the
``K`` metrics of :func:`private_metric_keys` (each in ``[0, 1]``, so two users' vectors
— or two datasets of one user — differ by at most ``√K`` in L2: the sensitivity under
either relation) plus ``N(0, σ_e² K)`` on each metric: on the device for ``record`` and
``user-local`` (each user's vector), by the server on the sum for ``user-central``.
One release is the Gaussian mechanism ``(σ_e, q = 1, 1 step)``, composed into the same
history as training and counted against the same budget.

σ in a step is always noise std / sensitivity (see :mod:`fedrec.core.privacy.accounting`).

σ from ε: with ``--epsilon`` and no ``--noise-multiplier``, the evaluation gets
``EVAL_SHARE`` of the budget (``σ_e`` keeps ``E`` evaluation releases within
``EVAL_SHARE·ε``, ``E`` the run's evaluation rounds) unless ``--eval-noise-multiplier``
is given, and σ is the smallest that keeps a unit taking part in **every** round
(``dp-participations`` for the client-accounted modes) **and** every evaluation within ε.
With both ε and σ, ε is a budget σ must meet or the run is refused at start. With σ
alone, ε is tracked, no budget; ``σ_e`` then defaults to the training σ (accounted).

δ must be below ``1/n`` for ``n`` units: records of the largest user (``record``) or users.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

from fedrec.core.evaluation.protocols import metric_keys
from fedrec.core.privacy.accounting import Step, epsilon, noise_for_epsilon
from fedrec.core.privacy.modes import MODE_RELATION, MODE_UNIT
from fedrec.core.privacy.record_steps import sample_rate as record_sample_rate
from fedrec.core.privacy.record_steps import steps_per_round as record_steps_per_round

if TYPE_CHECKING:  # annotations only: the run config is not imported at run time (no import cycle)
    from fedrec.core.config.evaluation_section import EvaluationConfig
    from fedrec.core.config.privacy_section import PrivacyConfig
    from fedrec.core.config.run_config import RunConfig
    from fedrec.core.data.split import LeaveOneOutSplit

UNIT = MODE_UNIT  # mode -> the unit it protects (one definition: fedrec.core.privacy.modes)
RELATION = MODE_RELATION  # mode -> neighbouring relation (one definition: fedrec.core.privacy.modes)
# who adds the noise (and keeps the accountant) of each mode's releases
ACCOUNTED_BY = {"record": "client", "user-local": "client", "user-central": "server", "user-distributed": "server"}
EVAL_SHARE = 0.1  # of the budget ε, for the evaluation releases, when σ_e is derived


def private_metric_keys(k: int) -> tuple[str, ...]:
    """The metrics an evaluation reply releases under DP (``full_recall`` equals ``full_hr``
    with one held-out item, so it is not released twice)."""
    return tuple(key for key in metric_keys(k) if not key.startswith("full_recall"))


def train_sensitivity(privacy: PrivacyConfig, clip: float | None = None) -> float:
    """L2 sensitivity of one training release under the mode's relation: ``2C`` (replace-one) or ``C``."""
    c = privacy.clip if clip is None else clip
    return 2 * c if RELATION[privacy.dp] == "replace-one" else c


def eval_sensitivity(evaluation: EvaluationConfig) -> float:
    """``√K``: a vector of ``K`` metrics in ``[0, 1]`` moves by at most this much."""
    return math.sqrt(len(private_metric_keys(evaluation.eval_k)))


def evaluation_rounds(config: RunConfig) -> int:
    """Rounds that evaluate: every ``eval-every``-th and the last."""
    return len({r for r in range(1, config.rounds + 1) if r % config.eval_every == 0 or r == config.rounds})


def _train_run(config: RunConfig, n_units: int) -> tuple[float, int]:
    """``(q, steps)`` of a unit's whole planned training (without σ)."""
    if config.dp == "record":
        q = record_sample_rate(config.record_sample_rate)
        return q, planned_participations(config) * record_steps_per_round(q, config.local_epochs, config.user_epochs)
    if config.dp == "user-local":
        return 1.0, planned_participations(config)
    return central_rate(config, n_units), config.rounds


def eval_noise(config: RunConfig, n_units: int) -> float:
    """σ_e (accounted = noise std / √K) of one evaluation release."""
    if config.eval_noise_multiplier > 0:
        return config.eval_noise_multiplier
    if config.epsilon > 0:
        return noise_for_epsilon(EVAL_SHARE * config.epsilon, config.delta, 1.0, evaluation_rounds(config),
                                 config.accountant)
    return _fixed_train_noise(config.privacy)


def evaluation_step(config: RunConfig, n_units: int) -> Step:
    """The ``(σ_e, 1, 1)`` of one evaluation release."""
    return (eval_noise(config, n_units), 1.0, 1)


def _planned_eval_runs(config: RunConfig, n_units: int) -> tuple[Step, ...]:
    return ((eval_noise(config, n_units), 1.0, evaluation_rounds(config)),)


def _fixed_train_noise(privacy: PrivacyConfig) -> float:
    """The accounted training σ when ``--noise-multiplier`` is given."""
    sigma = privacy.noise_multiplier
    return sigma / 2 if RELATION[privacy.dp] == "replace-one" else sigma


def _derived_train_noise(config: RunConfig, n_units: int) -> float:
    """The accounted training σ: given, or the smallest within the budget with the evaluations."""
    if config.noise_multiplier > 0:
        return _fixed_train_noise(config.privacy)
    q, steps = _train_run(config, n_units)
    return noise_for_epsilon(config.epsilon, config.delta, q, steps, config.accountant,
                             _planned_eval_runs(config, n_units))


def record_noise(config: RunConfig) -> float:
    """σ of record-level DP-SGD (noise std σ·C on the clipped sum); the same for every user."""
    return _derived_train_noise(config, 0)


def local_noise(config: RunConfig) -> float:
    """The *mechanism* σ of a ``user-local`` release: noise std ``σ·C``, accounted as ``σ/2``."""
    return config.noise_multiplier if config.noise_multiplier > 0 else 2 * _derived_train_noise(config, 0)


def training_step(config: RunConfig, n_units: int = 0) -> Step:
    """The accounted ``(σ, q, steps)`` of one round's training release of one unit."""
    if config.dp == "record":
        q = record_sample_rate(config.record_sample_rate)
        return (record_noise(config), q, record_steps_per_round(q, config.local_epochs, config.user_epochs))
    if config.dp == "user-local":
        return (local_noise(config) / 2, 1.0, 1)
    if config.dp == "user-central":
        return (central_noise(config, n_units), central_rate(config, n_units), 1)
    raise ValueError("dp off has no training step")


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
    return _derived_train_noise(config, n_units)


def budget(privacy: PrivacyConfig) -> float | None:
    """The budget ε a run must stay within, or ``None`` (dp off, or σ given without ε: ε is tracked)."""
    return privacy.epsilon if privacy.dp != "off" and privacy.epsilon > 0 else None


def check_against_data(config: RunConfig, n_units: int, records_per_user: Sequence[int] | None = None) -> None:
    """Refuse a DP configuration that the data makes meaningless; say which and why.

    ``n_units`` is the number of users; ``records_per_user`` the training records of each
    user (needed for ``record``, whose δ is about the largest user's records).
    """
    if config.dp == "off":
        return
    if config.dp == "record":
        if not records_per_user:
            raise ValueError("dp record needs the users' record counts to check δ")
        n, what = int(max(records_per_user)), "records of the largest user"
    else:
        n, what = n_units, "users"
    if not config.delta < 1 / max(n, 1):
        raise ValueError(f"delta={config.delta:g} must be below 1/n = {1 / n:.3g} (n = {n} {what}): "
                         "a larger δ allows releasing some unit's data outright")
    if config.epsilon > 0 and config.noise_multiplier > 0:
        spent = planned_epsilon(config, n_units)
        if spent > config.epsilon * (1 + 1e-9):
            raise ValueError(
                f"noise-multiplier {config.noise_multiplier:g} and epsilon {config.epsilon:g} disagree: "
                f"{planned_participations(config) if config.dp != 'user-central' else config.rounds} rounds "
                f"at σ={config.noise_multiplier:g} and {evaluation_rounds(config)} evaluations spend "
                f"ε={spent:.3g} ({config.accountant}, δ={config.delta:g}, {RELATION[config.dp]}); "
                "raise σ, lower the rounds, or give only one of the two")


def planned_history(config: RunConfig, n_units: int) -> list[Step]:
    """Everything a unit taking part in every planned round and evaluation goes through."""
    sigma, q, steps = training_step(config, n_units)
    rounds = config.rounds if config.dp == "user-central" else planned_participations(config)
    return [(sigma, q, steps * rounds), *_planned_eval_runs(config, n_units)]


def planned_epsilon(config: RunConfig, n_units: int, records_per_user: Sequence[int] | None = None) -> float:
    """ε after a full run for a unit taking part in every planned round and evaluation."""
    if config.dp == "off":
        return 0.0
    return epsilon(planned_history(config, n_units), config.delta, config.accountant)


def privacy_plan(config: RunConfig, n_units: int) -> dict[str, Any]:
    """What the run's mechanisms are, as numbers: written to ``privacy_plan.json`` at the
    start of a run and cross-checked against the ledger by ``fedrec audit``."""
    if config.dp == "off":
        raise ValueError("dp off has no privacy plan")
    sigma, q, steps = training_step(config, n_units)
    who = ACCOUNTED_BY[config.dp]
    return {
        "mode": config.dp, "unit": UNIT[config.dp], "relation": RELATION[config.dp],
        "accountant": config.accountant, "delta": config.delta, "budget": budget(config.privacy),
        "n_units": int(n_units), "rounds": config.rounds,
        "train": {"noise_multiplier": sigma, "sensitivity": train_sensitivity(config.privacy), "clip": config.clip,
                  "sample_rate": q, "steps": steps, "who": who,
                  "noise_std": sigma * train_sensitivity(config.privacy),
                  "adaptive_clip": bool(config.adaptive_clip and config.dp == "user-central")},
        "evaluate": {"noise_multiplier": eval_noise(config, n_units),
                     "sensitivity": eval_sensitivity(config.evaluation),
                     "metrics": list(private_metric_keys(config.eval_k)), "sample_rate": 1.0, "steps": 1,
                     "releases": evaluation_rounds(config), "who": who},
        "planned_epsilon": planned_epsilon(config, n_units),
    }


def preflight(config: RunConfig, split: "LeaveOneOutSplit") -> str:
    """Check the DP configuration against the data (raises ``ValueError``); describe it."""
    n_users = split.n_users
    records = [len(split.train_items_of(u)) for u in range(n_users)] if config.dp == "record" else None
    check_against_data(config, n_users, records)
    if config.dp == "user-distributed":  # γ and σ need the update's length and the round's size
        from fedrec.core.privacy import distributed_mode

        return distributed_mode.describe(distributed_mode.plan_for_split(config, split), config)
    return describe(config, n_users)


def describe(config: RunConfig, n_units: int, records_per_user: Sequence[int] | None = None) -> str:
    """What is private, against whom, under which relation: printed at the start of a run."""
    if config.dp == "off":
        return "dp off: nothing is private — updates leave clients unclipped and un-noised"
    if config.dp == "user-distributed":
        raise ValueError("dp user-distributed is described with its data (preflight): γ and σ depend on the "
                         "update's length and the clients per round")
    target = f"budget ε={config.epsilon:g}" if config.epsilon > 0 else "no budget"
    sigma, q, steps = training_step(config, n_units)
    if config.dp == "record":
        where = (f"each client (Opacus DP-SGD; public Poisson q={q:g}, {steps} steps a round, "
                 f"sum divided by {config.batch_size})")
        noise = f"σ={sigma:.3g}"
    elif config.dp == "user-local":
        where = "each client on its own clipped update (adversary: the server, seeing one user's release)"
        noise = f"noise std {local_noise(config):.3g}·C, sensitivity 2C → accounted σ={sigma:.3g}"
    else:
        where = "the trusted server on the sum of clients' clipped updates (Poisson-sampled users)"
        noise = f"σ={sigma:.3g}, q={q:.3g}"
    rounds = planned_participations(config) if config.dp != "user-central" else config.rounds
    return (f"dp {config.dp}: unit = {UNIT[config.dp]}, relation = {RELATION[config.dp]}, noise by {where}; "
            f"{noise}, C={config.clip:g}, δ={config.delta:g}, {target}, accountant {config.accountant}; "
            f"evaluations noised (σ_e={eval_noise(config, n_units):.3g} on {len(private_metric_keys(config.eval_k))} "
            f"metrics, {evaluation_rounds(config)} releases); ε after {rounds} rounds of participation and every "
            f"evaluation ≤ {planned_epsilon(config, n_units):.3g}")
