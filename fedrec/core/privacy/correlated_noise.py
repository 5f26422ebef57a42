"""Noise correlated across rounds: banded Toeplitz matrix-factorisation mechanisms (user level).

**Workload.** Round ``t`` (``t = 0 … T−1``) releases the sum ``g_t ∈ R^d`` of the sampled
users' clipped updates (L2 norm ≤ ``clip`` each). The model a plain server step reaches after
round ``t`` is a fixed function of the prefix sum ``S_t = Σ_{s≤t} g_s``: ``S = A G`` with
``A`` the ``T × T`` lower-triangular matrix of ones and ``G`` the ``T × d`` matrix of the
``g_t``.

**Mechanism** (Denisov et al. 2022; Choquette-Choo et al. 2023). Factor ``A = B C`` with
``C`` lower-triangular, Toeplitz and banded: ``C_{ts} = c_{t−s}`` for ``0 ≤ t−s < b`` and 0
otherwise (``c_0 > 0``). The mechanism is the single Gaussian release ``C G + Z`` (``Z``: iid
``N(0, σ²)`` entries); what the server steps with is round ``t``'s row of
``C^{-1}(C G + Z) = G + C^{-1} Z``: ``g_t + w_t`` where the noise ``w = C^{-1} Z`` is built
online by forward substitution, ``w_t = (z_t − Σ_{j=1}^{b−1} c_j w_{t−j}) / c_0``
(:class:`NoiseStream`, which keeps the last ``b − 1`` noise vectors). ``C = I`` (``b = 1``) is
the independent Gaussian noise of every round (DP-SGD/DP-FedAvg without amplification).

**Participation.** A user takes part in at most ``k`` rounds, any two of them at least ``s``
rounds apart (``s = 1``: possibly every round, ``k = T``; cyclic groups: ``s`` groups, group
``t mod s`` in round ``t``, ``k = ⌈T/s⌉``). Neighbouring datasets differ in one user
(add/remove): ``G`` changes by ``D`` whose rows vanish outside the user's rounds ``P`` and
have norm ≤ ``clip``. With the band no wider than the separation (``b ≤ s``), the columns of
``C`` for two rounds of ``P`` have disjoint supports, so

    ‖C D‖_F² = Σ_{t∈P} ‖C_{:,t}‖² ‖D_t‖² ≤ clip² · max_P Σ_{t∈P} ‖C_{:,t}‖²  =: Δ²,

a maximum over ``s``-separated sets of at most ``k`` rounds (:func:`sensitivity`: a dynamic
programme; it equals the brute force over all such sets in the tests). A band wider than the
separation is refused: the cross terms ``⟨C_{:,t}, C_{:,t'}⟩`` would then count.

**Accounting.** ``C G + Z`` is one Gaussian mechanism of L2 sensitivity ``Δ``: it is exactly
``μ``-GDP with ``μ = Δ/σ`` and its tight ``(ε, δ)`` curve is (Balle & Wang 2018, Thm. 8)

    δ(ε) = Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ).

:func:`epsilon` inverts it; no composition is needed because the whole run is that one
release (the server's other releases, such as evaluation, compose on top).

**Choosing ``c``.** For a separation ``s`` and band ``b ≤ s`` the total squared error of the
prefix sums per unit of privacy is ``Δ²/clip² · ‖A C^{-1}‖_F²`` (both factors are computed in
``O(T b)`` from the Toeplitz coefficients: ``C^{-1}`` is lower-triangular Toeplitz with the
power-series inverse of ``c``, ``A C^{-1}`` Toeplitz with its prefix sums). ``banded-mf``
minimises that product over ``c`` (``c_0 = 1``, L-BFGS from the band-``b`` truncation of the
square-root factorisation ``c_j = binom(2j, j)/4^j`` of Fichtenberger, Henzinger & Upadhyay
2023); ``gaussian`` is ``c = (1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_ndtr

from fedrec.core.config.privacy_section import NOISE_MECHANISMS
from fedrec.core.privacy.secure_random import SecureRandom

MECHANISMS = NOISE_MECHANISMS  # ("gaussian", "banded-mf"), owned by the run config's privacy section


@dataclass(frozen=True)
class Participation:
    """At most ``max_rounds`` rounds per user out of ``rounds``, any two ``separation`` apart."""

    rounds: int
    separation: int = 1
    max_rounds: int | None = None  # None: as many as the separation allows, ⌈rounds / separation⌉

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.separation < 1:
            raise ValueError(f"rounds and separation must be ≥ 1, got {self.rounds} and {self.separation}")
        if self.max_rounds is not None and self.max_rounds < 1:
            raise ValueError(f"max_rounds must be ≥ 1, got {self.max_rounds}")

    @property
    def participations(self) -> int:
        possible = -(-self.rounds // self.separation)
        return possible if self.max_rounds is None else min(possible, self.max_rounds)


def toeplitz_matrix(coefficients: np.ndarray, rounds: int) -> np.ndarray:
    """The ``rounds × rounds`` lower-triangular Toeplitz matrix with first column ``coefficients``."""
    c = np.zeros(rounds)
    c[: min(rounds, len(coefficients))] = coefficients[:rounds]
    index = np.subtract.outer(np.arange(rounds), np.arange(rounds))
    return np.where(index >= 0, c[np.clip(index, 0, rounds - 1)], 0.0)


def inverse_coefficients(coefficients: np.ndarray, rounds: int) -> np.ndarray:
    """First column of ``C^{-1}`` (lower-triangular Toeplitz): the power series ``1 / c(x)`` to ``x^{T−1}``."""
    c = np.asarray(coefficients, dtype=np.float64)
    if not c[0] > 0:
        raise ValueError(f"the first coefficient must be positive, got {c[0]}")
    inverse = np.zeros(rounds)
    inverse[0] = 1.0 / c[0]
    band = len(c)
    for t in range(1, rounds):
        lags = np.arange(1, min(band, t + 1))
        inverse[t] = -np.dot(c[lags], inverse[t - lags]) / c[0]
    return inverse


def column_norms_squared(coefficients: np.ndarray, rounds: int) -> np.ndarray:
    """``‖C_{:,t}‖²`` for every round ``t`` (the last columns are cut by the matrix's end)."""
    c2 = np.asarray(coefficients, dtype=np.float64) ** 2
    band = len(c2)
    return np.array([c2[: min(band, rounds - t)].sum() for t in range(rounds)])


def sensitivity(coefficients: np.ndarray, participation: Participation, clip: float = 1.0) -> float:
    """``Δ``: ``clip · sqrt(max_P Σ_{t∈P} ‖C_{:,t}‖²)`` over ``s``-separated sets of at most ``k`` rounds.

    Refuses a band wider than the separation (the bound would miss the cross terms)."""
    band = len(coefficients)
    if band > participation.separation:
        raise ValueError(f"a band of {band} rounds is wider than the {participation.separation} rounds between a "
                         "user's participations: the columns of its rounds would overlap and the sensitivity "
                         "bound would not hold; use a band ≤ the separation")
    weights = column_norms_squared(coefficients, participation.rounds)
    return clip * math.sqrt(_best_separated_sum(weights, participation.separation, participation.participations))


def _best_separated_sum(weights: np.ndarray, separation: int, count: int) -> float:
    """Max of ``Σ_{t∈P} weights[t]`` over sets ``P`` of at most ``count`` indices ``separation`` apart.

    ``best[j][t]``: the best sum of at most ``j`` picks among indices ``≥ t``."""
    rounds = len(weights)
    best = np.zeros((count + 1, rounds + separation + 1))
    for j in range(1, count + 1):
        for t in range(rounds - 1, -1, -1):
            best[j, t] = max(best[j, t + 1], weights[t] + best[j - 1, t + separation])
    return float(best[count, 0])


def prefix_error(coefficients: np.ndarray, rounds: int) -> float:
    """``‖A C^{-1}‖_F²``: the total variance of the ``T`` noisy prefix sums per unit ``σ²``."""
    prefix = np.cumsum(inverse_coefficients(coefficients, rounds))  # first column of A C^{-1}
    return float(np.dot(rounds - np.arange(rounds), prefix ** 2))


def total_error(coefficients: np.ndarray, participation: Participation) -> float:
    """``(Δ/clip)² · ‖A C^{-1}‖_F²``: prefix-sum variance at a fixed privacy level (``μ`` fixed)."""
    return sensitivity(coefficients, participation) ** 2 * prefix_error(coefficients, participation.rounds)


def sqrt_coefficients(band: int) -> np.ndarray:
    """``binom(2j, j)/4^j``, ``j < band``: the square root of ``A`` (truncated to the band)."""
    c = np.ones(band)
    for j in range(1, band):
        c[j] = c[j - 1] * (2 * j - 1) / (2 * j)
    return c


def coefficients_for(mechanism: str, participation: Participation, band: int | None = None) -> np.ndarray:
    """The Toeplitz coefficients ``c`` of a mechanism for a participation pattern.

    ``banded-mf``: band ``b`` = ``band`` or the separation (never more than the rounds)."""
    if mechanism == "gaussian":
        return np.ones(1)
    if mechanism != "banded-mf":
        raise ValueError(f"unknown noise mechanism {mechanism!r}: choose one of {MECHANISMS}")
    width = min(participation.separation if band is None else band, participation.rounds)
    if width > participation.separation:
        raise ValueError(f"band {width} is wider than the separation {participation.separation} between a user's "
                         "rounds: refused (the sensitivity would not hold)")
    return np.array(_optimised(width, participation.rounds, participation.separation, participation.participations))


@lru_cache(maxsize=64)
def _optimised(band: int, rounds: int, separation: int, participations: int) -> tuple[float, ...]:
    """The optimised coefficients, cached as a tuple (a cached array could be changed in place)."""
    participation = Participation(rounds, separation, participations)
    start = sqrt_coefficients(band)
    if band == 1:
        return tuple(start)

    def objective(free: np.ndarray) -> float:
        c = np.concatenate(([1.0], free))
        return math.log(total_error(c, participation))

    found = minimize(objective, start[1:], method="L-BFGS-B")
    best = np.concatenate(([1.0], found.x))
    return tuple(float(c) for c in (best if total_error(best, participation) <= total_error(start, participation)
                                    else start))


def gaussian_delta(mu: float, eps: float) -> float:
    """``δ(ε)`` of the ``μ``-GDP Gaussian mechanism (Balle & Wang 2018), computed in logs."""
    if mu <= 0:
        return 0.0
    first = log_ndtr(mu / 2 - eps / mu)
    second = eps + log_ndtr(-mu / 2 - eps / mu)
    return float(math.exp(first) * -math.expm1(second - first)) if second < first else 0.0


def epsilon(mu: float, delta: float) -> float:
    """The smallest ``ε ≥ 0`` with ``δ(ε) ≤ delta`` for the ``μ``-GDP mechanism (bisection)."""
    if not 0 < delta < 1:
        raise ValueError(f"δ must be in (0, 1), got {delta}")
    if gaussian_delta(mu, 0.0) <= delta:
        return 0.0
    low, high = 0.0, 1.0
    while gaussian_delta(mu, high) > delta:
        low, high = high, high * 2
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if gaussian_delta(mu, middle) > delta else (low, middle)
    return high


def mu_for_epsilon(target_epsilon: float, delta: float) -> float:
    """The largest ``μ`` whose ``ε(μ, δ) ≤ target_epsilon`` (bisection; ``ε`` grows with ``μ``)."""
    if not target_epsilon > 0:
        raise ValueError(f"ε must be positive, got {target_epsilon}")
    low, high = 0.0, 1.0
    while epsilon(high, delta) <= target_epsilon:
        low, high = high, high * 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if epsilon(middle, delta) <= target_epsilon else (low, middle)
    return low


@dataclass(frozen=True)
class NoisePlan:
    """What a run needs: the coefficients, ``Δ``, the noise std ``σ`` of ``Z`` and the ``ε`` it gives."""

    mechanism: str
    coefficients: tuple[float, ...]
    participation: Participation
    clip: float
    sensitivity: float
    noise_std: float
    delta: float

    @property
    def mu(self) -> float:
        return self.sensitivity / self.noise_std

    @property
    def epsilon(self) -> float:
        return epsilon(self.mu, self.delta)


def plan_noise(mechanism: str, participation: Participation, clip: float, target_epsilon: float,
               delta: float, band: int | None = None) -> NoisePlan:
    """The smallest noise for which the whole run is ``(target_epsilon, delta)``-DP."""
    if not clip > 0:
        raise ValueError(f"clip must be positive, got {clip}")
    c = coefficients_for(mechanism, participation, band)
    delta_l2 = sensitivity(c, participation, clip)
    std = delta_l2 / mu_for_epsilon(target_epsilon, delta)
    return NoisePlan(mechanism, tuple(float(x) for x in c), participation, clip, delta_l2, std, delta)


@dataclass
class NoiseStream:
    """Round by round, the noise ``w_t = (C^{-1} Z)_t`` to add to round ``t``'s released sum.

    Keeps the last ``b − 1`` noise vectors (secret: whoever holds them and one round's
    noisy sum could remove part of the next round's noise)."""

    plan: NoisePlan
    dim: int
    generator: SecureRandom
    _history: list[np.ndarray] = field(default_factory=list)
    round: int = 0

    def next(self) -> np.ndarray:
        if self.round >= self.plan.participation.rounds:
            raise RuntimeError(f"the noise plan covers {self.plan.participation.rounds} rounds; round "
                               f"{self.round + 1} would release more than it accounts")
        c = self.plan.coefficients
        z = np.asarray(self.generator.normal(0.0, self.plan.noise_std, size=self.dim), dtype=np.float64)
        for lag, previous in enumerate(reversed(self._history), start=1):
            z = z - c[lag] * previous
        w = z / c[0]
        self._history = (self._history + [w])[-(len(c) - 1):] if len(c) > 1 else []
        self.round += 1
        return w
