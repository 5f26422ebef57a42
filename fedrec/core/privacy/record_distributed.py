"""``dp record-distributed``: federated DP gradient descent over every record, through secure aggregation.

One round is one gradient step of the whole federation (Abadi et al. 2016's DP-SGD with
the full batch, the form DP-FTRL and central DP-SGD take when a server is trusted), with
the server replaced by secure aggregation and its noise by the distributed discrete
Gaussian (Kairouz, Liu & Steinke 2021). Every one of the round's ``n`` clients (one user
each):

1. forms one example per training record (the record and ``k`` negatives drawn uniformly
   from the catalogue) and computes each example's gradient at the current model
   (:mod:`fedrec.core.privacy.record_gradients`), split into its **shared** part (item rows,
   dense global layers) and its **local** part (user vector, local head);
2. clips each part of each example to ``C`` separately;
3. **shared**: scales each record's clipped gradient by ``1/γ`` and rounds it
   randomly to integers (``⌊x⌋ + Bernoulli(x − ⌊x⌋)`` per entry: unbiased), sums its
   records, adds its own noise share ``N_Z(0, σ_share²)`` on every coordinate and sends
   the vector mod ``2^bits`` into secure aggregation (the emulation here adds the vectors
   mod ``2^bits``, which is all the server would learn);
4. **local**: steps its local parameters with the sum of its clipped local gradients plus
   its own continuous Gaussian noise ``N(0, (σ_l C)²)``; they never leave the device.

The server decodes ``γ·(Σ mod 2^bits)`` (centred) and steps the shared part with
``−lr·(noised sum)/n``, ``n`` the public number of clients in the round.

Relation: **add/remove one record** (one interaction of one user), every client taking
part in both worlds. Adversary: an honest-but-curious server seeing only each round's
modular sum and who took part, plus whoever reads what it releases (and, for the local
part, anyone who would see a device's local parameters: they move only through noised
sums, so they are covered too).

Sensitivity. Removing record ``r`` removes its rounded shared vector ``q_r`` from the
integer sum (the negatives of the other records are independent draws, the same in both
worlds). ``q_r`` is the rounding of a vector of norm ≤ ``C/γ`` whose entries lie in
``(1 + k)`` gathered rows per item table plus the dense layers; each gathered row's
rounding error has norm ≤ ``√w`` (``w`` the row width), each dense layer's ≤ ``√P``, so
by the triangle inequality

    ‖q_r‖₂ ≤ B = C/γ + (1 + k)·Σ_tables √w + Σ_dense √P,
    ‖q_r‖₁ ≤ min(B², √nnz · B)       (integer entries: each nonzero ≥ 1),

``nnz = (1 + k)·Σ w + Σ P`` the entries a record can touch. Removing ``r`` also removes
its clipped local gradient (norm ≤ ``C``) from its user's local sum.

Accounting (zCDP, no amplification claimed: every record is in every round). One round
releases the pair (integer sum, every device's noised local sum); by the chain rule of
Rényi divergences the pair's ρ is the sum of

* the shared part's, KLS21's bound for ``n_min`` shares of σ_share with sensitivities
  ``(B, ‖q_r‖₁)`` on the encoded length ``D``
  (:func:`~fedrec.core.privacy.distributed_accounting.round_rho`), and
* the local part's, a Gaussian mechanism with sensitivity ``C`` and std ``σ_l C``:
  ``1/(2σ_l²)``.

``σ_l`` is fixed to the shared part's noise-to-clip ratio ``√n_min·σ_share·γ/C``, so the two
parts are noised alike. ``T`` rounds give ``T·ρ``; evaluation releases add ``1/(2σ_e²)``
each (as under ``user-distributed``), and ε is CKS20's conversion at δ.

Wrap-around (utility, not privacy). A coordinate of the true integer sum is at most
``R·(C/γ + 1 + k)`` in size, ``R = n · RECORDS_PER_CLIENT`` the public bound on the
records of a round (a client with more records is refused), and the noise (a sum of
``n`` independent discrete Gaussians, each σ_share²-sub-Gaussian, CKS20) exceeds ``t``
with probability ≤ ``2 exp(−t²/(2nσ_share²))``; a union bound over ``D`` coordinates gives the
round's wrap-around probability, which the plan keeps ≤ ``ddg-wrap-probability``.

Dropout. As under ``user-distributed``: shares are sized for ``n_min`` survivors
(``ddg-min-clients``); in the emulation nobody drops out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from fedrec.core.arrays import Arrays, Tensors
from fedrec.core.models.base import Recommender
from fedrec.core.privacy.discrete_gaussian import MAX_SIGMA, sample_discrete_gaussian
from fedrec.core.privacy.distributed_accounting import (
    MIN_NOISE_STD,
    Sensitivity,
    round_rho,
    zcdp_epsilon,
)
from fedrec.core.privacy.distributed_mode import eval_rho, rho_for_epsilon
from fedrec.core.privacy.quantisation import reduce_modulo
from fedrec.core.privacy.record_gradients import ExampleChunk, clipped_gradients
from fedrec.core.privacy.secure_random import SecureRandom

MODE = "record-distributed"
# The public bound on one client's records in a round (the wrap-around bound's R / n).
RECORDS_PER_CLIENT = 4096
# The rounding may inflate one record's integer norm by at most this share of C/γ.
MAX_ROUNDING_INFLATION = 0.01
# Examples whose gradients are computed together (memory ∝ this × a record's entries).
EXAMPLE_CHUNK = 4096


@dataclass(frozen=True)
class Layout:
    """Where one record's shared gradient can land (public model structure).

    ``row_widths``: the width ``w`` of each item table's row; ``dense_sizes``: the size of
    each dense global array; ``negatives``: ``k``; ``dim``: ``D``, the shared length.
    """

    row_widths: tuple[int, ...]
    dense_sizes: tuple[int, ...]
    negatives: int
    dim: int

    @property
    def gathered_rows(self) -> int:
        return 1 + self.negatives

    @property
    def rounding_slack(self) -> float:
        """Grid units: ``(1 + k)·Σ √w + Σ √P``, a bound on one record's rounding error norm."""
        return self.gathered_rows * sum(math.sqrt(w) for w in self.row_widths) + sum(
            math.sqrt(p) for p in self.dense_sizes)

    @property
    def nnz(self) -> int:
        """The most entries one record's shared gradient touches."""
        return self.gathered_rows * sum(self.row_widths) + sum(self.dense_sizes)


def layout_of(model: Recommender, shared: Arrays, negatives: int) -> Layout:
    """The :class:`Layout` of ``model``'s shared arrays ``shared`` (its global part)."""
    tables = set(model.item_table_names)
    widths = tuple(int(np.prod(shared[n].shape[1:])) for n in sorted(shared) if n in tables)
    dense = tuple(int(np.size(shared[n])) for n in sorted(shared) if n not in tables)
    return Layout(widths, dense, int(negatives), int(sum(np.size(v) for v in shared.values())))


@dataclass(frozen=True)
class RecordPlan:
    """The public numbers of a ``record-distributed`` run.

    ``scale`` = ``C/γ``: grid units per clip; ``share_std``: σ_share (grid units) of each
    client's discrete Gaussian share; ``n_min`` shares are accounted.
    """

    clip: float
    scale: float
    bits: int
    share_std: float
    n_clients: int
    n_min: int
    layout: Layout
    rounds: int
    delta: float
    eval_noise_multiplier: float
    eval_releases: int
    epsilon_target: float
    wrap_probability: float

    @property
    def gamma(self) -> float:
        """γ: the update units of one grid step."""
        return self.clip / self.scale

    @property
    def bound(self) -> Sensitivity:
        """One record's ``(‖q_r‖₂, ‖q_r‖₁)`` bounds in grid units (module docstring)."""
        l2 = self.scale + self.layout.rounding_slack
        return Sensitivity(l2=l2, l1=min(l2 * l2, math.sqrt(self.layout.nnz) * l2))

    @property
    def noise_multiplier(self) -> float:
        """σ_l = √n_min·σ_share/scale: the accounted noise std over the clip, both parts."""
        return math.sqrt(self.n_min) * self.share_std / self.scale

    @property
    def local_noise_std(self) -> float:
        """The std of a device's Gaussian noise on its local sum, update units: ``σ_l·C``."""
        return self.noise_multiplier * self.clip

    @property
    def round_rho(self) -> float:
        return shared_rho(self.share_std, self.n_min, self.bound, self.layout.dim) + local_rho(self.noise_multiplier)

    def epsilon(self, rounds: int, evaluations: int = 0) -> float:
        """ε at δ after ``rounds`` rounds and ``evaluations`` evaluation releases."""
        rho = rounds * self.round_rho + (evaluations * eval_rho(self.eval_noise_multiplier) if evaluations else 0.0)
        return zcdp_epsilon(rho, self.delta)

    def parameters(self) -> dict[str, float | int]:
        """What recomputes ε (ledger and report rows)."""
        return {"clip": self.clip, "gamma": self.gamma, "scale": self.scale, "bits": self.bits,
                "sigma_share": self.share_std, "n_min": self.n_min, "n_clients": self.n_clients,
                "dim": self.layout.dim, "row_widths": list(self.layout.row_widths),
                "dense_sizes": list(self.layout.dense_sizes), "negatives": self.layout.negatives,
                "nnz": self.layout.nnz, "rounding_slack": self.layout.rounding_slack,
                "local_noise_multiplier": self.noise_multiplier, "rounds": self.rounds,
                "wrap_probability": self.wrap_probability}


def shared_rho(share_std: float, n_min: int, bound: Sensitivity, dim: int) -> float:
    """ρ of one round's integer sum (KLS21, see :func:`~fedrec.core.privacy.distributed_accounting.round_rho`)."""
    return round_rho(share_std, n_min, bound, dim)


def local_rho(noise_multiplier: float) -> float:
    """ρ of one device's local release: a Gaussian with sensitivity ``C`` and std ``σ_l C``: ``1/(2σ_l²)``."""
    if not noise_multiplier > 0:
        return math.inf
    return 1.0 / (2.0 * noise_multiplier ** 2)


def wrap_probability(scale: float, share_std: float, n_clients: int, layout: Layout, bits: int) -> float:
    """A bound on P[some coordinate of a round's integer sum leaves ``[−2^(bits−1), 2^(bits−1))``]."""
    reach = n_clients * RECORDS_PER_CLIENT * (scale + layout.gathered_rows)
    room = 2.0 ** (bits - 1) - reach
    if room <= 0:
        return 1.0
    exponent = -room ** 2 / (2.0 * n_clients * share_std ** 2)
    return min(1.0, 2.0 * layout.dim * math.exp(exponent))


def plan_records(*, target_epsilon: float, delta: float, rounds: int, n_clients: int, n_min: int, clip: float,
                 layout: Layout, bits: int, wrap_target: float, eval_noise_multiplier: float = 0.0,
                 eval_releases: int = 0) -> RecordPlan:
    """Scale and σ_share for ``target_epsilon`` over ``rounds`` rounds (and the evaluation releases).

    The training's ρ is the budget's ρ less the evaluations'. For a scale ``S = C/γ`` the
    noise multiplier ``σ_l`` solving ``T·(ρ_shared + 1/(2σ_l²)) = ρ_train`` is found by
    bisection; the largest ``S`` (from ``2^(bits−1)/(2R)``, halving) whose wrap-around bound
    is met and whose σ_share the sampler can draw (≤ 2⁴⁰) is kept. Refused, with the reason, when no ``S`` keeps the rounding's inflation
    ``slack/S`` under 1 % within ``2^bits``.
    """
    if not target_epsilon > 0:
        raise ValueError("dp record-distributed plans its noise for a budget: give --epsilon > 0")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    if not 1 <= n_min <= n_clients:
        raise ValueError(f"n_min = {n_min} must be in 1..{n_clients} (the clients of a round)")
    rho_total = rho_for_epsilon(target_epsilon, delta)
    rho_eval = eval_releases * eval_rho(eval_noise_multiplier) if eval_releases else 0.0
    rho_train = rho_total - rho_eval
    if not rho_train > 0:
        raise ValueError(f"the {eval_releases} evaluation releases (σ_e = {eval_noise_multiplier:.3g}) spend all of "
                         f"ε = {target_epsilon:g}: raise eval-noise-multiplier or evaluate less often")
    per_round = rho_train / rounds
    records = n_clients * RECORDS_PER_CLIENT
    scale = float(2 ** (bits - 2)) / records
    minimum = layout.rounding_slack / MAX_ROUNDING_INFLATION
    while scale >= minimum:
        share = _share_std(scale, per_round, n_min, layout)
        wrap = wrap_probability(scale, share, n_clients, layout, bits)
        if wrap <= wrap_target and share <= MAX_SIGMA:  # (the sampler draws σ ≤ 2^40)
            return RecordPlan(clip, scale, bits, share, n_clients, n_min, layout, rounds, delta,
                              eval_noise_multiplier, eval_releases, target_epsilon, wrap)
        scale /= 2.0
    needed = math.ceil(math.log2(4 * records * minimum))
    raise ValueError(f"dp record-distributed: 2^{bits} cannot hold the sum of {n_clients} clients × "
                     f"{RECORDS_PER_CLIENT} records with the rounding inflating a record's norm by under "
                     f"{MAX_ROUNDING_INFLATION:.0%} and wrap-around ≤ {wrap_target:g}: use ddg-bits ≥ {needed}")


def _share_std(scale: float, per_round: float, n_min: int, layout: Layout) -> float:
    """The smallest σ_share (grid units) whose round ρ (shared + local) is ≤ ``per_round``."""

    def rho(share: float) -> float:
        bound_l2 = scale + layout.rounding_slack
        bound = Sensitivity(bound_l2, min(bound_l2 ** 2, math.sqrt(layout.nnz) * bound_l2))
        return shared_rho(share, n_min, bound, layout.dim) + local_rho(math.sqrt(n_min) * share / scale)

    low, high = MIN_NOISE_STD, max(MIN_NOISE_STD * 2, scale)
    while rho(high) > per_round:
        high *= 2.0
    if rho(low) <= per_round:
        return low
    while high / low - 1.0 > 1e-12:
        middle = math.sqrt(low * high)
        if rho(middle) <= per_round:
            high = middle
        else:
            low = middle
    return high


@dataclass
class RoundOutput:
    """A round's outcome: the decoded shared sum (update units), each client's new local
    parameters (stacked, in the order given), the modular sum the server saw."""

    shared_sum: Arrays
    local: Tensors
    modular_sum: NDArray[np.int64]
    examples: int


def randomized_round(x: torch.Tensor, rng: SecureRandom) -> torch.Tensor:
    """``⌊x⌋ + Bernoulli(x − ⌊x⌋)`` per entry (unbiased), int64, uniforms from ``rng``."""
    x = x.to(torch.float64)
    floor = torch.floor(x)
    uniforms = torch.from_numpy(np.asarray(rng.random(x.numel()), dtype=np.float64).reshape(tuple(x.shape)))
    return (floor + (uniforms.to(x.device) < (x - floor)).to(torch.float64)).to(torch.int64)


def examples_of(records: Sequence[NDArray[np.int64]], n_items: int, negatives: int,
                rng: SecureRandom) -> ExampleChunk:
    """Every record of every client as one example (owner = the client's position),
    with ``negatives`` items drawn uniformly from the catalogue per example."""
    owners = np.concatenate([np.full(len(r), j, dtype=np.int64) for j, r in enumerate(records)]) \
        if records else np.zeros(0, dtype=np.int64)
    positives = np.concatenate([np.asarray(r, dtype=np.int64) for r in records]) if records else owners
    drawn = np.asarray(rng.integers(0, n_items, size=(len(positives), negatives)), dtype=np.int64)
    items = np.concatenate([positives[:, None], drawn.reshape(len(positives), negatives)], axis=1)
    return ExampleChunk(torch.from_numpy(owners), torch.from_numpy(items))


def record_round(model: Recommender, plan: RecordPlan, shared: Arrays, local: Tensors,
                 records: Sequence[NDArray[np.int64]], loss: str, lr: float, rng: SecureRandom,
                 buffers: Tensors | None = None, chunk_size: int = EXAMPLE_CHUNK) -> RoundOutput:
    """One round of the ``n`` clients whose records are ``records[j]`` and local parameters
    ``local[name][j]`` (see the module docstring). ``rng`` stands for the clients' own
    generators (every draw is independent; one generator emulates them all)."""
    n_clients = len(records)
    if n_clients != plan.n_clients:
        raise ValueError(f"the plan is for {plan.n_clients} clients a round, the round has {n_clients}")
    too_many = [j for j, r in enumerate(records) if len(r) > RECORDS_PER_CLIENT]
    if too_many:
        raise ValueError(f"client {too_many[0]} holds {len(records[too_many[0]])} records, above the public bound "
                         f"RECORDS_PER_CLIENT = {RECORDS_PER_CLIENT} the wrap-around bound assumes")
    names = sorted(shared)
    tables = set(model.item_table_names)
    n_items = next(shared[n].shape[0] for n in names if n in tables)
    shared_t = {n: torch.from_numpy(np.asarray(shared[n], dtype=np.float32)) for n in names}
    integer = {n: torch.zeros(shared[n].shape, dtype=torch.int64) for n in names}
    local_sum = {n: torch.zeros(v.shape, dtype=torch.float64) for n, v in local.items()}
    examples = examples_of(records, n_items, plan.layout.negatives, rng)
    for start in range(0, len(examples.owners), chunk_size):
        chunk = ExampleChunk(examples.owners[start:start + chunk_size], examples.items[start:start + chunk_size])
        grads = clipped_gradients(model, local, shared_t, chunk, loss, plan.clip, buffers)
        for n, g in grads.local.items():
            local_sum[n].index_add_(0, chunk.owners, g.to(torch.float64))
        for n, g in grads.rows.items():
            q = randomized_round(g.to(torch.float64) * plan.scale / plan.clip, rng)
            integer[n].index_add_(0, chunk.items.reshape(-1), q.reshape(-1, *q.shape[2:]))
        for n, g in grads.dense.items():
            q = randomized_round(g.to(torch.float64) * plan.scale / plan.clip, rng)
            integer[n] += q.sum(dim=0)
    flat = np.concatenate([integer[n].numpy().reshape(-1) for n in names])
    for _ in range(n_clients):  # each client's own share, summed mod 2^bits as secure aggregation would
        flat = reduce_modulo(flat + sample_discrete_gaussian(plan.share_std, flat.size, rng), plan.bits)
    decoded = flat.astype(np.float64) * plan.gamma
    shared_sum, offset = {}, 0
    for n in names:
        size = int(np.size(shared[n]))
        shared_sum[n] = decoded[offset:offset + size].reshape(shared[n].shape)
        offset += size
    new_local = {}
    for n, total in local_sum.items():
        noise = torch.from_numpy(np.asarray(rng.standard_normal(total.numel()), dtype=np.float64)
                                 .reshape(tuple(total.shape))) * plan.local_noise_std
        new_local[n] = (local[n].to(torch.float64) - lr * (total + noise)).to(torch.float32)
    return RoundOutput(shared_sum, new_local, flat, len(examples.owners))
