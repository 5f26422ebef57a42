"""ε of the distributed discrete Gaussian (DDG) over T rounds, through concentrated DP.

The mechanism (see :mod:`fedrec.core.privacy.quantisation`). In each round every
participating client sends ``x̃ᵢ + yᵢ mod m``: its clipped, scaled, (rotated,) rounded
update ``x̃ᵢ ∈ ℤ^{d'}`` with ``‖x̃ᵢ‖₂ ≤ B`` (KLS21's conditional-rounding bound), plus
its noise share ``yᵢ ~ N_Z(0, σ²)^{d'}`` (``σ`` in grid units). Secure aggregation
reveals only ``Σᵢ (x̃ᵢ + yᵢ) mod m``.

Adversary. An honest-but-curious server (and whoever reads what it releases) that sees
only the modular sum of each round, follows the protocol, and knows which clients took
part. The ``n_min`` clients whose noise is counted add their share honestly.

Relation. **Add/remove one user's data** in its zero-out form: the neighbouring world
has the same participants, and the user's contribution is the zero vector (its device
still sends a noise share; the rounding of 0 is 0). The server sees who sent a vector,
so membership in a round is not what is protected; the content of the user's update is.
Under this relation the sum moves by ``Δ = x̃ᵤ`` with ``‖Δ‖₂ ≤ B`` and, as ``Δ`` is an
integer vector, ``‖Δ‖₁ ≤ min(B², √d'·B)`` (each nonzero ``|Δⱼ| ≥ 1``). Replace-one
neighbours would double both.

One round (Kairouz, Liu & Steinke 2021, ICML, "The Distributed Discrete Gaussian
Mechanism for Federated Learning with Secure Aggregation", their bound on the sum of
discrete Gaussians). The sum of ``n`` independent ``N_Z(0, σ²)`` is *not* a discrete
Gaussian, but it is close: with

    τ = 10 · Σ_{k=1}^{n−1} exp(−2π²σ² · k/(k+1)),

for every integer shift ``Δ`` and every order ``α ≥ 1`` (needs ``σ ≥ 1/2``),
``D_α(Z + Δ ‖ Z) ≤ α·ε̂²/2`` with

    ε̂ = min{ √(‖Δ‖₂²/(nσ²) + τ·d'/2),  ‖Δ‖₂/(√n·σ) + τ·‖Δ‖₁ },

i.e. the round is ``ρ``-zCDP with ``ρ = ε̂²/2``. Without τ this is the Gaussian
mechanism's ``‖Δ‖²/(2nσ²)`` (a single discrete Gaussian of variance ``nσ²`` shifted by
an integer has exactly the continuous Gaussian's Rényi divergence at integer orders);
τ is the price of the sum not being one discrete Gaussian; it falls like
``exp(−π²σ²)``: for ``n = 1000``, τ ≈ 75 at ``σ = 1/2``, 6·10⁻⁴ at ``σ = 1``, 7·10⁻¹⁷ at
``σ = 2`` (the shares of a useful run are thousands of grid units: τ = 0 in float64).

Composition. zCDP composes additively: ``T`` rounds give ``ρ_T = T·ρ``. With clients
sampled per round, a user is in at most ``T`` rounds, so ``T·ρ`` still holds; **no
amplification by sampling is claimed** (the server knows who was sampled, and the
zero-out relation keeps the noise count fixed).

Conversion to (ε, δ). The tight conversion of Canonne, Kamath & Steinke 2020 ("The
Discrete Gaussian for Differential Privacy", NeurIPS; the same bound as Asoodeh et al.
2021 and Balle et al. 2020): an ``(α, αρ)``-RDP mechanism is ``(ε, δ)``-DP with

    ε(α) = αρ + (ln(1/δ) + (α−1)·ln(1 − 1/α) − ln α) / (α − 1),

minimised here over real ``α > 1``; never worse than the classic ``ρ + 2√(ρ ln(1/δ))``.

Dropout. The guarantee counts the noise of ``n_min`` clients: the number whose noise is
*guaranteed* to be in the sum. If the protocol tolerates dropouts down to ``n_min``
survivors, each share must be over-provisioned: ``σ_share² = σ_total² / n_min``
(:func:`noise_share_std`); when more survive, the extra noise only helps (adding
independent noise never increases a divergence). If fewer than ``n_min`` survive, the
round's sum carries less noise than accounted and must not be released.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from fedrec.core.privacy.quantisation import Quantiser, choose_gamma, wrap_around_probability

__all__ = [
    "MIN_NOISE_STD", "DDGPlan", "Sensitivity", "epsilon", "noise_share_std", "plan_distributed_dp",
    "round_rho", "sensitivity", "sigma_for_epsilon", "tau", "zcdp_epsilon",
]

# KLS21's bound on the sum of discrete Gaussians is stated for σ ≥ 1/2 (grid units).
MIN_NOISE_STD = 0.5


@dataclass(frozen=True)
class Sensitivity:
    """The bounds on one user's effect on the integer sum: ``‖Δ‖₂ ≤ l2``, ``‖Δ‖₁ ≤ l1``."""

    l2: float
    l1: float


def sensitivity(quantiser: Quantiser) -> Sensitivity:
    """``l2 = B`` (the conditional rounding's bound, grid units, on the encoded length
    ``d'``) and ``l1 = min(B², √d'·B)`` (an integer vector's entries are 0 or ≥ 1 in size)."""
    bound = quantiser.norm_bound
    return Sensitivity(l2=bound, l1=min(bound * bound, math.sqrt(quantiser.encoded_dim) * bound))


def tau(noise_std: float, n_clients: int) -> float:
    """KLS21's ``τ = 10·Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1))`` (0 for a single client)."""
    _check_noise(noise_std)
    n = _check_count("n_clients", n_clients)
    k = np.arange(1, n, dtype=np.float64)
    return float(10.0 * np.sum(np.exp(-2.0 * math.pi ** 2 * noise_std ** 2 * k / (k + 1.0))))


def round_rho(noise_std: float, n_min: int, bound: Sensitivity, dim: int) -> float:
    """ρ of one round: ``ε̂²/2`` with ``ε̂ = min{√(Δ₂²/(nσ²) + τd/2), Δ₂/(√n σ) + τΔ₁}``.

    ``noise_std``: each client's σ in grid units (≥ 1/2); ``n_min``: the clients whose
    noise is guaranteed in the sum; ``dim``: the encoded length ``d'``.
    """
    _check_noise(noise_std)
    n = _check_count("n_min", n_min)
    d = _check_count("dim", dim)
    if not (bound.l2 >= 0 and bound.l1 >= 0):
        raise ValueError(f"sensitivities must be ≥ 0, got {bound}")
    t = tau(noise_std, n)
    total_variance = n * noise_std ** 2
    first = math.sqrt(bound.l2 ** 2 / total_variance + t * d / 2.0)
    second = bound.l2 / math.sqrt(total_variance) + t * bound.l1
    return min(first, second) ** 2 / 2.0


def zcdp_epsilon(rho: float, delta: float) -> float:
    """The smallest ε of CKS20's conversion for a ρ-zCDP mechanism at ``delta``:
    ``min_{α>1} αρ + (ln(1/δ) + (α−1)ln(1−1/α) − ln α)/(α−1)``, floored at 0."""
    if not (rho >= 0 and math.isfinite(rho)):
        raise ValueError(f"ρ must be finite and ≥ 0, got {rho}")
    _check_delta(delta)
    if rho == 0:
        return 0.0
    log_inv_delta = math.log(1.0 / delta)

    def at_order(log_alpha_minus_one: float) -> float:
        a = 1.0 + math.exp(log_alpha_minus_one)
        return a * rho + (log_inv_delta + (a - 1.0) * math.log1p(-1.0 / a) - math.log(a)) / (a - 1.0)

    # the continuous optimum of the classic bound, α* = 1 + √(ln(1/δ)/ρ), brackets the search
    centre = math.log(math.sqrt(log_inv_delta / rho))
    grid = np.linspace(centre - 12.0, centre + 12.0, 241)
    values = [at_order(x) for x in grid]
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    refined = minimize_scalar(at_order, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    return max(0.0, min(float(refined.fun), values[best]))


def epsilon(noise_std: float, *, n_min: int, rounds: int, delta: float, quantiser: Quantiser) -> float:
    """ε at ``delta`` after ``rounds`` rounds, each ``round_rho`` with the quantiser's
    sensitivity on its encoded length (zero-out add/remove-one-user, honest-but-curious
    server seeing only the modular sums; composition ``ρ_T = T·ρ``, no amplification)."""
    t = _check_count("rounds", rounds, allow_zero=True)
    _check_delta(delta)
    if t == 0:
        return 0.0
    rho = round_rho(noise_std, n_min, sensitivity(quantiser), quantiser.encoded_dim)
    return zcdp_epsilon(t * rho, delta)


def sigma_for_epsilon(target_epsilon: float, *, n_min: int, rounds: int, delta: float,
                      quantiser: Quantiser, rel_tol: float = 1e-10) -> float:
    """The smallest per-client σ (grid units, ≥ 1/2) with ``epsilon(σ, …) ≤ target``, by
    bisection on ``ln σ`` (``epsilon`` decreases in σ: both terms of ε̂ and τ do)."""
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ValueError(f"the target ε must be finite and > 0, got {target_epsilon}")

    def eps(sigma: float) -> float:
        return epsilon(sigma, n_min=n_min, rounds=rounds, delta=delta, quantiser=quantiser)

    low = MIN_NOISE_STD
    if eps(low) <= target_epsilon:
        return low
    high = 2.0 * low
    while eps(high) > target_epsilon:
        low, high = high, 2.0 * high
        if high > 1e15:
            raise ValueError(f"no σ ≤ 1e15 reaches ε = {target_epsilon}")
    while high / low - 1.0 > rel_tol:
        middle = math.sqrt(low * high)
        if eps(middle) <= target_epsilon:
            high = middle
        else:
            low = middle
    return high


def noise_share_std(total_std: float, n_min: int) -> float:
    """``σ_share = σ_total / √n_min``: shares sized so that any ``n_min`` survivors
    together carry the accounted variance ``σ_total²`` (over-provisioned for dropouts)."""
    if not (total_std >= 0 and math.isfinite(total_std)):
        raise ValueError(f"σ_total must be finite and ≥ 0, got {total_std}")
    return total_std / math.sqrt(_check_count("n_min", n_min))


@dataclass(frozen=True)
class DDGPlan:
    """A consistent choice of the DDG's free parameters for a target ε."""

    quantiser: Quantiser
    noise_std: float  # each client's σ in grid units
    epsilon: float  # the accounted ε at delta over the rounds (≤ the target)
    wrap_probability: float  # bound on P[some coordinate of one round's sum wraps] (≤ the target)

    @property
    def noise_std_update_units(self) -> float:
        return self.noise_std * self.quantiser.gamma


def plan_distributed_dp(target_epsilon: float, *, delta: float, rounds: int, n_min: int, n_clients: int,
                        clip: float, dim: int, bits: int, beta: float | None = None, rotate: bool = True,
                        target_wrap_probability: float = 1e-9, max_iterations: int = 50) -> DDGPlan:
    """γ and σ together: σ depends on γ (the rounding inflates the sensitivity), γ on σ
    (the noise must fit in the modulus). ``n_clients`` is the most clients whose vectors
    are summed in a round (the wrap-around bound), ``n_min ≤ n_clients`` the fewest whose
    noise is counted (the privacy bound).

    Fixed-point iteration from γ for zero noise: each step takes the smallest γ for the
    current σ (update units), then the smallest σ for that γ. Both maps increase, so the
    iterates increase to the fixed point; the last γ is chosen with a 10⁻⁶ margin on σ and
    both bounds are checked before returning.
    """
    n_min = _check_count("n_min", n_min)
    n_clients = _check_count("n_clients", n_clients)
    if n_min > n_clients:
        raise ValueError(f"n_min = {n_min} exceeds the {n_clients} clients of a round")
    quantiser_args = {"clip": clip, "bits": bits, "dim": dim, "rotate": rotate}
    if beta is not None:
        quantiser_args["beta"] = beta
    sigma_update_units = 0.0
    for _ in range(max_iterations):
        choice = choose_gamma(clip, dim, n_clients, sigma_update_units * (1 + 1e-6), bits,
                              target_wrap_probability, rotate)
        quantiser = Quantiser(gamma=choice.gamma, **quantiser_args)
        sigma = sigma_for_epsilon(target_epsilon, n_min=n_min, rounds=rounds, delta=delta, quantiser=quantiser)
        wrap = wrap_around_probability(quantiser, n_clients, sigma)
        if wrap <= target_wrap_probability:
            eps = epsilon(sigma, n_min=n_min, rounds=rounds, delta=delta, quantiser=quantiser)
            return DDGPlan(quantiser=quantiser, noise_std=sigma, epsilon=eps, wrap_probability=wrap)
        sigma_update_units = sigma * choice.gamma
    raise ValueError(f"no (γ, σ) met ε ≤ {target_epsilon} and wrap-around ≤ {target_wrap_probability} with "
                     f"2^{bits} after {max_iterations} iterations: the modulus is too small for these clients (a coarser grid "
                     f"fits the noise but inflates the rounding, which needs more noise: use more bits)")


def _check_noise(noise_std: float) -> None:
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float, np.floating)):
        raise ValueError(f"σ must be a number, got {noise_std!r}")
    if not (noise_std >= MIN_NOISE_STD and math.isfinite(noise_std)):
        raise ValueError(f"the DDG bound needs each client's σ ≥ {MIN_NOISE_STD} (grid units), got {noise_std}")


def _check_count(name: str, value: int, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}")
    return int(value)


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"δ must be in (0, 1), got {delta}")
