"""``dp user-distributed`` in the round driver: the run's DDG plan, the client's encoding,
the server's decoding, and the run's ε.

The mechanism is the distributed discrete Gaussian (Kairouz, Liu & Steinke 2021) of
:mod:`fedrec.core.privacy.quantisation` and :mod:`fedrec.core.privacy.distributed_accounting`
(derivation: ``docs/distributed_dp.md``). Per round, every one of the ``n`` sampled clients

1. trains, and takes the **global part** of its update ``Δ`` (local parts never leave),
   flattened in the order of the global arrays' names (:func:`flatten`);
2. encodes it (:func:`encode_update`): clip to ``C``, scale by ``1/γ``, rotate with the
   round's public seed, round conditionally, add its own noise share
   ``N_Z(0, σ_share²)`` from a :class:`~fedrec.core.privacy.secure_random.SecureRandom`,
   reduce mod ``2^bits``. A sampled client with nothing to train still sends the
   encoding of the zero vector (its noise share), so the noise count does not depend on
   anyone's data.

The server learns only ``Σᵢ zᵢ mod 2^bits`` (here computed in the clear by
:func:`~fedrec.core.privacy.quantisation.modular_sum`: the emulation of secure
aggregation, checked against :func:`fedrec.secure_aggregation.in_process.run_round` by the
tests), decodes it (:func:`decode_mean`: ``γ·Uᵀz``) and divides by ``n``, the public
number of clients sampled (every user weighs 1, as under the other user-level modes).

Plan (:func:`run_plan`). ``n_min`` is ``ddg-min-clients`` (the dropout allowance: the
fewest clients whose noise must reach the sum) or, when 0, every sampled client; each share
is over-provisioned, ``σ_share² = σ_total²/n_min``, so that **n_min** survivors carry the
accounted noise (:func:`~fedrec.core.privacy.distributed_accounting.noise_share_std`).
γ and σ come from :func:`~fedrec.core.privacy.distributed_accounting.plan_distributed_dp`
for ``n`` clients (the wrap-around bound, at most ``ddg-wrap-probability`` per round) and
``n_min`` (the privacy bound). In the driver nobody drops out, so all ``n`` shares are in
the sum and the realised noise exceeds the accounted one when ``n_min < n``.

Accounting. zCDP: a training round is ``ρ``-zCDP (KLS21, see
:func:`~fedrec.core.privacy.distributed_accounting.round_rho`); ``T`` rounds ``T·ρ`` (no
amplification by sampling). The evaluation releases are accounted as the other modes'
are: one Gaussian release with noise multiplier ``σ_e`` per evaluation round
(:func:`fedrec.core.privacy.plan.eval_noise`), which is ``1/(2σ_e²)``-zCDP; the two add.
ε is CKS20's conversion of the total ρ at δ
(:func:`~fedrec.core.privacy.distributed_accounting.zcdp_epsilon`). With a budget ε, the
evaluation's ρ is taken off the budget's ρ first and the training plan is sized for the
rest, so a run that trains every round and evaluates as planned ends at ε ≤ the budget.
The harness's evaluation is exact and never leaves the experimenter's process; the
accounted release is what the apps would release (the distributed evaluation release is
not built yet).

Relation and adversary: :mod:`fedrec.core.privacy.modes` (zero-out add/remove of one
user's data; an honest-but-curious server that sees only each round's modular sum and
who took part).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np

from fedrec.core.arrays import Arrays
from fedrec.core.privacy import plan as gaussian_plan
from fedrec.core.privacy.distributed_accounting import (
    DDGPlan,
    epsilon,
    plan_distributed_dp,
    round_rho,
    sensitivity,
    zcdp_epsilon,
)
from fedrec.core.privacy.quantisation import Quantiser, decode_sum, encode, encode_batch
from fedrec.core.privacy.secure_random import SecureRandom

if TYPE_CHECKING:  # annotations only: no import cycle with the run config
    from fedrec.core.config.run_config import RunConfig

MODE = "user-distributed"
# why the Flower apps refuse the mode (fedrec simulate, the ServerApp): said once, here
FLOWER_REFUSAL = ("dp user-distributed with --executor cohort runs only in the Flower-free round driver "
                  "(fedrec.core.federation.driver.run_federation): a Flower cohort node holds many users, and the SecAgg+ "
                  "path treats a node as one user (one clipped, noised encoding); over Flower use --executor "
                  "per-client (one user per node, SecAgg+ in the ServerApp/ClientApp), or deploy it (one user per "
                  "device)")


@dataclass(frozen=True)
class RunPlan:
    """What a ``user-distributed`` run does, as numbers (all public).

    ``ddg``: γ, the quantiser and each client's σ_share in grid units (``ddg.noise_std``,
    sized by the accountant for ``n_min`` shares in the sum).
    """

    ddg: DDGPlan
    n_clients: int  # clients sampled each round (whose vectors are summed)
    n_min: int  # the fewest clients whose noise share is counted
    rounds: int
    delta: float
    eval_noise_multiplier: float  # σ_e of one evaluation release (0 when none is planned)
    eval_releases: int  # evaluation releases planned
    epsilon_target: float  # the run's budget ε

    @property
    def quantiser(self) -> Quantiser:
        return self.ddg.quantiser

    @property
    def share_std(self) -> float:
        """σ_share, grid units: each client's own noise share (``n_min`` of them are accounted)."""
        return self.ddg.noise_std

    @property
    def total_std(self) -> float:
        """σ_total = √n_min · σ_share, grid units: the noise the accountant counts in the sum."""
        return self.ddg.noise_std * math.sqrt(self.n_min)

    @property
    def round_rho(self) -> float:
        return round_rho(self.share_std, self.n_min, sensitivity(self.quantiser), self.quantiser.encoded_dim)

    @property
    def eval_rho(self) -> float:
        return eval_rho(self.eval_noise_multiplier)

    def epsilon(self, rounds: int, evaluations: int = 0) -> float:
        """ε at δ after ``rounds`` training rounds and ``evaluations`` evaluation releases."""
        if evaluations == 0:  # exactly the accountant's number for the training plan
            return epsilon(self.share_std, n_min=self.n_min, rounds=rounds, delta=self.delta,
                           quantiser=self.quantiser)
        return zcdp_epsilon(rounds * self.round_rho + evaluations * self.eval_rho, self.delta)

    def parameters(self) -> dict[str, float | int]:
        """The mechanism's parameters as ledger and report rows carry them."""
        q = self.quantiser
        return {"gamma": q.gamma, "sigma_share": self.share_std, "n_min": self.n_min, "n_clients": self.n_clients,
                "bits": q.bits, "clip": q.clip, "beta": q.beta, "dim": q.dim, "rotate": int(q.rotate),
                "rounds": self.rounds, "wrap_probability": self.ddg.wrap_probability}


def eval_rho(noise_multiplier: float) -> float:
    """ρ of one Gaussian release with noise multiplier σ_e (std / sensitivity): ``1/(2σ_e²)``."""
    if noise_multiplier == 0:
        return math.inf
    return 1.0 / (2.0 * noise_multiplier ** 2)


def rho_for_epsilon(target: float, delta: float) -> float:
    """The largest ρ whose CKS20 conversion is ≤ ``target`` at ``delta`` (bisection on ln ρ)."""
    low, high = 1e-12, 1.0
    while zcdp_epsilon(high, delta) <= target:
        high *= 2.0
    while high / low - 1.0 > 1e-12:
        middle = math.sqrt(low * high)
        if zcdp_epsilon(middle, delta) <= target:
            low = middle
        else:
            high = middle
    return low


def min_clients(config: RunConfig, n_clients: int) -> int:
    """``n_min``: ``ddg-min-clients`` or every sampled client; refused above ``n_clients``."""
    if config.ddg_min_clients > n_clients:
        raise ValueError(f"ddg-min-clients = {config.ddg_min_clients} exceeds the {n_clients} clients sampled per "
                         "round: the noise split assumes more clients than a round has (lower ddg-min-clients or "
                         "raise clients-per-round)")
    return config.ddg_min_clients or n_clients


def run_plan(config: RunConfig, dim: int, n_clients: int, n_units: int, evaluations: int | None = None) -> RunPlan:
    """γ, σ_share and the accounting of a run of ``config.rounds`` rounds of ``n_clients``
    clients, updates of length ``dim``; ``evaluations`` releases (default: the run's
    evaluation rounds). Raises ``ValueError`` saying why when no plan fits."""
    if config.dp != MODE:
        raise ValueError(f"dp {config.dp} has no distributed plan")
    if not config.epsilon > 0:
        raise ValueError("dp user-distributed derives γ and σ from --epsilon: give a budget ε > 0")
    evaluations = gaussian_plan.evaluation_rounds(config) if evaluations is None else evaluations
    return _run_plan(config, int(dim), int(n_clients), int(n_units), int(evaluations))


@lru_cache(maxsize=16)
def _run_plan(config: RunConfig, dim: int, n_clients: int, n_units: int, evaluations: int) -> RunPlan:
    n_min = min_clients(config, n_clients)
    sigma_e = gaussian_plan.eval_noise(config, n_units) if evaluations else 0.0
    train_target = config.epsilon
    if evaluations:
        rho_train = rho_for_epsilon(config.epsilon, config.delta) - evaluations * eval_rho(sigma_e)
        if not rho_train > 0:
            raise ValueError(f"the {evaluations} evaluation releases (σ_e = {sigma_e:.3g}) spend all of ε = "
                             f"{config.epsilon:g}: raise eval-noise-multiplier or evaluate less often")
        train_target = zcdp_epsilon(rho_train, config.delta)
    try:
        ddg = plan_distributed_dp(train_target, delta=config.delta, rounds=config.rounds, n_min=n_min,
                                  n_clients=n_clients, clip=config.clip, dim=dim, bits=config.ddg_bits,
                                  target_wrap_probability=config.ddg_wrap_probability)
    except ValueError as error:
        raise ValueError(f"dp user-distributed: ddg-bits = {config.ddg_bits} cannot hold {n_clients} clients' "
                         f"updates of length {dim} at ε = {config.epsilon:g} with wrap-around ≤ "
                         f"{config.ddg_wrap_probability:g}: {error}") from error
    return RunPlan(ddg, n_clients, n_min, config.rounds, config.delta, sigma_e, evaluations, config.epsilon)


def rotation_seed(seed: int, server_round: int) -> int:
    """The round's public rotation seed (a hash of the run seed and the round; fixed before
    any update of the round exists)."""
    digest = hashlib.sha256(f"fedrec ddg round {int(seed)} {int(server_round)}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def flatten(update: Arrays, names: Sequence[str]) -> np.ndarray:
    """The global part of an update as one float64 vector, in the order of ``names``."""
    return np.concatenate([np.asarray(update[name], dtype=np.float64).ravel() for name in names])


def unflatten(vector: np.ndarray, like: Arrays, names: Sequence[str]) -> Arrays:
    """Inverse of :func:`flatten` (float32 arrays shaped like ``like``)."""
    out: Arrays = {}
    offset = 0
    for name in names:
        shape = np.shape(like[name])
        size = int(np.prod(shape, dtype=np.int64))
        out[name] = vector[offset:offset + size].reshape(shape).astype(np.float32)
        offset += size
    if offset != vector.size:
        raise ValueError(f"a vector of length {vector.size} does not fit arrays of {offset} entries")
    return out


def encode_update(update: np.ndarray, run: RunPlan, seed: int, rng: SecureRandom) -> np.ndarray:
    """What one client hands to secure aggregation: clip, scale, rotate, round, add its
    noise share ``N_Z(0, σ_share²)`` drawn from ``rng``, reduce mod ``2^bits``."""
    return encode(update, run.quantiser, run.share_std, rng, seed)


def encode_updates(updates: np.ndarray, run: RunPlan, seed: int, rngs: Sequence[SecureRandom]) -> np.ndarray:
    """:func:`encode_update` for ``k`` clients at once (the round driver's emulation): row
    ``i`` of ``updates`` (shape ``(k, dim)``) encoded with client ``i``'s own generator
    ``rngs[i]`` — the same output as ``encode_update(updates[i], run, seed, rngs[i])``
    (:func:`~fedrec.core.privacy.quantisation.quantise_batch`)."""
    return encode_batch(updates, run.quantiser, run.share_std, rngs, seed)


def decode_mean(summed: np.ndarray, run: RunPlan, seed: int, count: int) -> np.ndarray:
    """The server's step on the modular sum: ``γ·Uᵀz / count`` (float64, update units)."""
    if count < 1:
        raise ValueError("the mean of no clients is undefined")
    return decode_sum(summed, run.quantiser, seed) / count


# --- the server's check of the sum ---------------------------------------------------------

# P[an honest round is refused] ≤ this (plus the wrap-around bound): the noise-norm tail below
SUM_CHECK_FAILURE = 1e-12


class SumOutOfBound(ValueError):
    """The decoded sum is longer than any sum of ``count`` honest encodings can be (except
    with probability ``SUM_CHECK_FAILURE``): some client sent a vector it could not have
    made by the protocol (or the sum wrapped around). The round's sum must not be used."""


def sum_norm_bound(run: RunPlan, count: int, failure: float = SUM_CHECK_FAILURE) -> float:
    """The largest L2 norm an honest decoded sum of ``count`` clients has, except with
    probability ``failure`` (update units, the sum before dividing by ``count``).

    An honest client's rounded vector has ``‖x̃ᵢ‖₂ ≤ B`` always (the conditional rounding
    redraws until it does), so ``‖Σ x̃ᵢ‖₂ ≤ count·B``. The noise ``N = Σ yᵢ`` has ``d'``
    independent coordinates, each a sum of ``count`` draws of N_Z(0, σ_share²), hence
    ``count·σ_share²``-subgaussian (CKS20); Hsu, Kakade & Zhang 2012 (Thm. 1, A = I) give
    ``‖N‖₂² ≤ count·σ_share²·(d' + 2√(d'·t) + 2t)`` with probability ≥ 1 − e^{−t}, here
    ``t = ln(1/failure)``. When nothing wraps the centred modular sum is ``Σ x̃ᵢ + N``, and
    decoding (``γ·Uᵀ``, ``U`` orthogonal, then dropping the padding) does not lengthen it:
    the bound is ``γ·(count·B + √count·σ_share·√(d' + 2√(d'·t) + 2t))``.
    """
    if count < 1:
        raise ValueError("a sum of no clients has no bound")
    if not 0 < failure < 1:
        raise ValueError(f"the failure probability must be in (0, 1), got {failure}")
    q = run.quantiser
    t = math.log(1.0 / failure)
    length = q.encoded_dim
    noise = math.sqrt(count) * run.share_std * math.sqrt(length + 2.0 * math.sqrt(length * t) + 2.0 * t)
    return q.gamma * (count * q.norm_bound + noise)


def check_sum(decoded_sum: np.ndarray, run: RunPlan, count: int) -> float:
    """The server's check before it uses a round's decoded sum (``γ·Uᵀz``, the output of
    :func:`~fedrec.core.privacy.quantisation.decode_sum`, not yet divided by ``count``):
    returns its L2 norm, or raises :class:`SumOutOfBound` when the norm exceeds
    :func:`sum_norm_bound` (an honest round is refused with probability at most
    ``SUM_CHECK_FAILURE`` plus the wrap-around bound).

    What it bounds: the norm of what the round can add to the model, ``≤ γ·B + noise/count``
    per client on average — a client sending garbage from ``Z_m`` (norm ≈ ``m·√(d'/12)``
    grid units) is caught. What it does not: a malicious client can still add any vector
    that keeps the sum inside the bound — up to the slack between the honest sum's actual
    norm and the worst case ``count·B`` plus the noise's tail, which can be several times
    one client's clip when the honest updates are not aligned. Bounding each client's own
    contribution needs a proof of its norm (zero-knowledge range proofs), not built here.
    """
    x = np.asarray(decoded_sum, dtype=np.float64)
    norm = float(np.linalg.norm(x)) if np.all(np.isfinite(x)) else math.inf
    bound = sum_norm_bound(run, count)
    if not norm <= bound * (1 + 1e-9):  # 1e-9: float rounding of the decoding, never an honest excess
        raise SumOutOfBound(f"the decoded sum of {count} clients has norm {norm:.6g} > {bound:.6g}, the most "
                            f"{count} honest encodings reach except with probability {SUM_CHECK_FAILURE:g} "
                            f"(count·γ·B = {count * run.quantiser.gamma * run.quantiser.norm_bound:.6g} plus the "
                            "noise's tail): a client sent a vector outside the protocol, or the sum wrapped around")
    return norm


def checked_mean(summed: np.ndarray, run: RunPlan, seed: int, count: int) -> np.ndarray:
    """The server's whole step on a round's modular sum of ``count`` encodings: decode it,
    :func:`check_sum` it (raises :class:`SumOutOfBound`), and divide by ``count``."""
    if count < 1:
        raise ValueError("a mean over no clients")
    decoded = decode_sum(summed, run.quantiser, seed)
    check_sum(decoded, run, count)
    return decoded / count


def describe(run: RunPlan, config: RunConfig) -> str:
    """One line for the start of a run: the mechanism, its relation and ε."""
    q = run.quantiser
    return (f"dp user-distributed: unit = user, relation = zero-out add/remove, noise by each of the {run.n_clients} "
            f"sampled clients (distributed discrete Gaussian, σ_share = {run.share_std:.4g} grid units, counted for "
            f"n_min = {run.n_min}); the server sees only the sum mod 2^{q.bits} (γ = {q.gamma:.4g}, C = {q.clip:g}, "
            f"β = {q.beta:.3g}, wrap-around ≤ {run.ddg.wrap_probability:.2g} a round); δ={config.delta:g}, budget "
            f"ε={config.epsilon:g}; ε after {run.rounds} rounds and {run.eval_releases} evaluations ≤ "
            f"{run.epsilon(run.rounds, run.eval_releases):.4g}")


def sampled_per_round(config: RunConfig, family: object, split: object) -> int:
    """``n``: the clients a round samples (``clients-per-round`` of the family's trainable users)."""
    eligible = family.trainable_users(split)  # type: ignore[attr-defined]
    pool = split.n_users if eligible is None else len(eligible)  # type: ignore[attr-defined]
    return min(config.clients_per_round, pool)


def plan_for_split(config: RunConfig, split: object) -> RunPlan:
    """The run's plan on ``split``: ``dim`` from the family's global arrays, ``n`` from the sampling."""
    from fedrec.core.families.registry import family_of

    family = family_of(config.model)
    arrays = family.initial_global(config, split)
    dim = sum(int(np.size(value)) for value in arrays.values())
    return run_plan(config, dim, sampled_per_round(config, family, split), split.n_users)  # type: ignore[attr-defined]


def ledger_entries(run: RunPlan, run_id: str, server_round: int, rounds_done: int, evaluations_done: int,
                   release: str = "train", eval_sensitivity: float = 1.0) -> list:
    """The server's ledger row for one round's training release (``release="train"``) or one
    evaluation release (``"evaluate"``); ε is the run's after it.

    A train row carries the DDG parameters in ``mechanism`` (canonical JSON), its
    ``sensitivity`` is ``B`` (grid units, the conditional rounding's bound) and its
    ``noise_multiplier`` ``√n_min·σ_share / B`` (the accounted noise over the sensitivity,
    as for the Gaussian rows; the accountant reads ``mechanism``), ``q = 1``, one step. An
    evaluation row is the Gaussian release ``(σ_e, 1, 1)``, composed in zCDP."""
    import json

    from fedrec.core.privacy.ledger_rows import DISTRIBUTED_ACCOUNTANT, SERVER, LedgerEntry

    eps = run.epsilon(rounds_done, evaluations_done)
    common = dict(run_id=run_id, round=int(server_round), unit="user", mode=MODE, who=SERVER, sample_rate=1.0,
                  steps=1, clip_norm=run.quantiser.clip, delta=run.delta, accountant=DISTRIBUTED_ACCOUNTANT,
                  epsilon=eps, budget=run.epsilon_target, relation="zero-out")
    if release == "evaluate":
        return [LedgerEntry(**common, noise_multiplier=run.eval_noise_multiplier, sensitivity=eval_sensitivity,
                            release="evaluate")]
    bound = run.quantiser.norm_bound
    mechanism = json.dumps(run.parameters(), sort_keys=True, separators=(",", ":"))
    return [LedgerEntry(**common, noise_multiplier=run.total_std / bound, sensitivity=bound, release="train",
                        mechanism=mechanism)]


def recompute_epsilons(rows: Sequence) -> list[tuple[float | None, str]]:
    """The audit's ε after each of one who's user-distributed rows (in order), from the rows'
    parameters alone: ``(ε, problem)``, ``ε`` ``None`` when a row's parameters make no sense.

    A train row's ρ is :func:`~fedrec.core.privacy.distributed_accounting.round_rho` of the
    quantiser its ``mechanism`` describes; an evaluation row's ``1/(2σ_e²)``. While every
    row so far is a train row with the same parameters, ε is
    :func:`~fedrec.core.privacy.distributed_accounting.epsilon` after that many rounds;
    otherwise CKS20's conversion of the summed ρ. The row's own ``noise_multiplier`` and
    ``sensitivity`` must match its ``mechanism``."""
    from fedrec.core.privacy.ledger_rows import mechanism_parameters

    out: list[tuple[float | None, str]] = []
    rho, same, first, broken = 0.0, True, None, False
    for index, row in enumerate(rows):
        if broken:
            out.append((None, "an earlier row's parameters make no sense"))
            continue
        if row.release == "evaluate":
            if not row.noise_multiplier > 0:
                broken = True
                out.append((None, f"evaluation σ_e must be > 0, got {row.noise_multiplier}"))
                continue
            rho += eval_rho(row.noise_multiplier)
            same = False
            out.append((zcdp_epsilon(rho, row.delta), ""))
            continue
        params = mechanism_parameters(row)
        try:
            assert params is not None
            quantiser = Quantiser(clip=float(params["clip"]), gamma=float(params["gamma"]), bits=int(params["bits"]),
                                  dim=int(params["dim"]), beta=float(params["beta"]), rotate=bool(params["rotate"]))
            sigma, n_min = float(params["sigma_share"]), int(params["n_min"])
            one = round_rho(sigma, n_min, sensitivity(quantiser), quantiser.encoded_dim)
        except (AssertionError, KeyError, TypeError, ValueError) as error:
            broken = True
            out.append((None, f"the DDG parameters make no sense ({error})"))
            continue
        problem = ""
        bound = quantiser.norm_bound
        if not math.isclose(row.sensitivity, bound, rel_tol=1e-9):
            problem = f"sensitivity {row.sensitivity:.6g} is not the rounding bound B = {bound:.6g} of its parameters"
        elif not math.isclose(row.noise_multiplier, math.sqrt(n_min) * sigma / bound, rel_tol=1e-9):
            problem = (f"noise_multiplier {row.noise_multiplier:.6g} is not √n_min·σ_share/B = "
                       f"{math.sqrt(n_min) * sigma / bound:.6g} of its parameters")
        elif not math.isclose(row.clip_norm, quantiser.clip, rel_tol=1e-12):
            problem = f"clip_norm {row.clip_norm:.6g} is not the parameters' clip {quantiser.clip:.6g}"
        first = params if first is None else first
        same = same and params == first
        rho += one
        if same:
            eps = epsilon(sigma, n_min=n_min, rounds=index + 1, delta=row.delta, quantiser=quantiser)
        else:
            eps = zcdp_epsilon(rho, row.delta)
        out.append((eps, problem))
    return out
