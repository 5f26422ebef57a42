"""``user-central`` over cyclic groups with the server's noise correlated across rounds.

**Participation.** The ``n`` users are split once into ``g = dp-groups`` groups by a
permutation seeded with the run's seed (it depends on ``n`` and the seed only, never on the
data); round ``t`` (1-based) trains group ``(t − 1) mod g``. A user takes part in at most
``⌈T/g⌉`` rounds, ``g`` apart: :class:`~fedrec.core.privacy.correlated_noise.Participation`
``(T, g)``. Neighbouring datasets differ in one user (add/remove), as for the other
``user-central`` runs.

**Noise.** Round ``t`` releases ``(Σ_{u∈G_t} clip(Δ_u) + w_t) / (n/g)`` where
``w_t = (C^{-1}Z)_t`` comes from :class:`~fedrec.core.privacy.correlated_noise.NoiseStream`
(``gaussian``: ``C = I``, independent noise; ``banded-mf``: a banded Toeplitz ``C`` of band
``g``). The server's updates determine ``C G + Z`` and back, so what is accounted is what
is released.

**Accounting.** Every release is a Gaussian mechanism, so the run is ``μ``-GDP with
(Dong, Roth & Su 2022: GDP composes by adding squares)

    μ² = (Δ_t / σ)² + E / σ_e²,

``Δ_t`` the sensitivity of the first ``t`` rounds (the leading ``t × t`` block of ``C``:
the same Toeplitz coefficients), ``E`` the evaluation releases so far, each ``(1/σ_e)``-GDP
(``σ_e`` is :func:`fedrec.core.privacy.plan.eval_noise`'s). ``ε`` at ``δ`` is the tight
Gaussian curve's (:func:`~fedrec.core.privacy.correlated_noise.epsilon`). The plan takes
``μ_target`` for ``(ε, δ)``, leaves ``E_planned/σ_e²`` to the planned evaluations and sets
``σ = Δ_T / sqrt(μ_target² − E_planned/σ_e²)``; a budget the evaluations alone exhaust is
refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedrec.core.privacy import correlated_noise as cn
from fedrec.core.privacy import plan

if TYPE_CHECKING:
    from fedrec.core.config.run_config import RunConfig


@dataclass(frozen=True)
class CorrelatedPlan:
    """The run's groups, training noise (``noise``) and evaluation noise ``σ_e``."""

    noise: cn.NoisePlan
    eval_sigma: float
    groups: tuple[tuple[int, ...], ...]
    n_users: int

    def users(self, server_round: int) -> list[int]:
        """The group that trains in ``server_round`` (1-based)."""
        return list(self.groups[(server_round - 1) % len(self.groups)])

    @property
    def divisor(self) -> float:
        """``n/g``: the public count the noised sum is divided by."""
        return self.n_users / len(self.groups)

    def mu(self, rounds_done: int, evaluations_done: int) -> float:
        """``μ`` of everything released after ``rounds_done`` rounds and ``evaluations_done`` evaluations."""
        train = 0.0
        if rounds_done > 0:
            done = cn.Participation(rounds_done, self.noise.participation.separation)
            train = cn.sensitivity(np.array(self.noise.coefficients), done, self.noise.clip) / self.noise.noise_std
        return math.sqrt(train ** 2 + evaluations_done / self.eval_sigma ** 2)

    def epsilon(self, rounds_done: int, evaluations_done: int) -> float:
        mu = self.mu(rounds_done, evaluations_done)
        return cn.epsilon(mu, self.noise.delta) if mu > 0 else 0.0

    def parameters(self) -> dict[str, object]:
        """What a row needs to recompute its ε: mechanism, coefficients, σ, Δ, σ_e, groups."""
        return {"mechanism": self.noise.mechanism, "coefficients": list(self.noise.coefficients),
                "noise_std": self.noise.noise_std, "sensitivity": self.noise.sensitivity,
                "clip": self.noise.clip, "eval_sigma": self.eval_sigma, "groups": len(self.groups),
                "rounds": self.noise.participation.rounds, "delta": self.noise.delta}


def cyclic_groups(n_users: int, groups: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """``groups`` near-equal groups of ``range(n_users)`` from a permutation seeded by ``seed``."""
    if not 1 <= groups <= n_users:
        raise ValueError(f"dp-groups {groups} for {n_users} users: every group needs a user")
    order = np.random.default_rng([seed, n_users, groups]).permutation(n_users)
    return tuple(tuple(int(u) for u in part) for part in np.array_split(order, groups))


def plan_correlated(config: RunConfig, n_users: int) -> CorrelatedPlan:
    """The noise of a ``dp-groups`` run for its ε budget (see the module docstring)."""
    if config.dp != "user-central" or config.dp_groups < 1:
        raise ValueError("a correlated-noise plan is for dp user-central with dp-groups ≥ 1")
    participation = cn.Participation(config.rounds, config.dp_groups)
    eval_sigma = plan.eval_noise(config, n_users)
    target = cn.mu_for_epsilon(config.epsilon, config.delta)
    train_squared = target ** 2 - plan.evaluation_rounds(config) / eval_sigma ** 2
    if train_squared <= 0:
        raise ValueError(f"ε = {config.epsilon}: the {plan.evaluation_rounds(config)} planned evaluation releases "
                         f"(σ_e = {eval_sigma:.3g}) alone spend the budget; evaluate less often or raise ε")
    coefficients = cn.coefficients_for(config.dp_mechanism, participation)
    sensitivity = cn.sensitivity(coefficients, participation, config.clip)
    noise = cn.NoisePlan(config.dp_mechanism, tuple(float(c) for c in coefficients), participation, config.clip,
                         sensitivity, sensitivity / math.sqrt(train_squared), config.delta)
    return CorrelatedPlan(noise, eval_sigma, cyclic_groups(n_users, config.dp_groups, config.seed), n_users)
