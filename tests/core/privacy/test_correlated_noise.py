"""Banded Toeplitz matrix-factorisation noise: sensitivity, ε and the online noise, each
against an independent computation on small cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import norm

from fedrec.core.privacy import correlated_noise as cn
from fedrec.core.privacy.secure_random import SecureRandom


def _brute_force_sensitivity(c: np.ndarray, rounds: int, separation: int, count: int) -> float:
    """max over separated sets P (|P| ≤ count) of Σ_{i,j∈P} (CᵀC)_ij: cross terms included."""
    matrix = cn.toeplitz_matrix(c, rounds)
    gram = matrix.T @ matrix
    best = 0.0
    for size in range(1, count + 1):
        for rounds_taken in itertools.combinations(range(rounds), size):
            if any(b - a < separation for a, b in zip(rounds_taken, rounds_taken[1:])):
                continue
            best = max(best, float(gram[np.ix_(rounds_taken, rounds_taken)].sum()))
    return math.sqrt(best)


@pytest.mark.parametrize("rounds,separation,count", [(8, 1, 8), (9, 3, 3), (10, 4, 2), (7, 2, 4)])
def test_sensitivity_equals_the_brute_force_over_participation_sets(rounds: int, separation: int,
                                                                     count: int) -> None:
    rng = np.random.default_rng(rounds * 10 + separation)
    c = np.concatenate(([1.0], rng.uniform(0.0, 0.8, size=separation - 1)))
    expected = _brute_force_sensitivity(c, rounds, separation, count)
    assert cn.sensitivity(c, cn.Participation(rounds, separation, count)) == pytest.approx(expected, rel=1e-12)


def test_sensitivity_bounds_every_neighbouring_change() -> None:
    """‖C D‖_F ≤ Δ for random D with row norms ≤ clip on the user's separated rounds."""
    rounds, separation, clip = 12, 3, 0.7
    participation = cn.Participation(rounds, separation)
    c = cn.coefficients_for("banded-mf", participation)
    bound = cn.sensitivity(c, participation, clip)
    matrix = cn.toeplitz_matrix(c, rounds)
    rng = np.random.default_rng(0)
    for _ in range(200):
        start = int(rng.integers(0, separation))
        rows = np.arange(start, rounds, separation)
        change = np.zeros((rounds, 5))
        change[rows] = rng.normal(size=(len(rows), 5))
        change[rows] *= clip / np.linalg.norm(change[rows], axis=1, keepdims=True)
        assert np.linalg.norm(matrix @ change) <= bound * (1 + 1e-12)


def test_a_band_wider_than_the_separation_is_refused() -> None:
    with pytest.raises(ValueError, match="wider than"):
        cn.sensitivity(np.array([1.0, 0.5, 0.2]), cn.Participation(10, 2))
    with pytest.raises(ValueError, match="wider than"):
        cn.coefficients_for("banded-mf", cn.Participation(10, 2), band=3)
    with pytest.raises(ValueError, match="unknown noise mechanism"):
        cn.coefficients_for("tree-ish", cn.Participation(10, 2))


def test_inverse_and_prefix_error_match_dense_linear_algebra() -> None:
    rounds = 11
    c = np.array([1.0, -0.3, 0.45, 0.1])
    dense = cn.toeplitz_matrix(c, rounds)
    inverse = np.linalg.inv(dense)
    assert np.allclose(cn.inverse_coefficients(c, rounds), inverse[:, 0])
    prefix_sums = np.tril(np.ones((rounds, rounds)))
    assert cn.prefix_error(c, rounds) == pytest.approx(float(((prefix_sums @ inverse) ** 2).sum()), rel=1e-10)
    assert np.allclose(cn.column_norms_squared(c, rounds), (dense ** 2).sum(axis=0))


def test_gaussian_delta_matches_numerical_integration() -> None:
    """δ(ε) = ∫ max(0, p(x) − e^ε q(x)) dx for p = N(μ, 1), q = N(0, 1), on a fine grid."""
    grid = np.linspace(-40, 40, 800_001)
    step = grid[1] - grid[0]
    for mu, eps in [(0.5, 0.1), (1.0, 1.0), (2.0, 3.0), (4.0, 8.0)]:
        integral = float(np.maximum(0.0, norm.pdf(grid, mu) - math.exp(eps) * norm.pdf(grid)).sum() * step)
        assert cn.gaussian_delta(mu, eps) == pytest.approx(integral, rel=1e-5, abs=1e-14)


def test_epsilon_inverts_delta_and_mu_for_epsilon_inverts_epsilon() -> None:
    for mu in (0.3, 1.0, 2.5):
        eps = cn.epsilon(mu, 1e-5)
        assert cn.gaussian_delta(mu, eps) <= 1e-5 < cn.gaussian_delta(mu, eps * 0.999)
    mu = cn.mu_for_epsilon(8.0, 1e-5)
    assert cn.epsilon(mu, 1e-5) <= 8.0 < cn.epsilon(mu * 1.001, 1e-5)


def test_gaussian_every_round_is_the_composition_of_t_gaussian_mechanisms() -> None:
    """C = I, a user in every round: μ = √T · clip/σ, the composition of T μ₁-GDP releases.
    The RDP accountant (an upper bound on the same mechanism) must not give a smaller ε."""
    from fedrec.core.privacy.accounting import epsilon as rdp_epsilon

    rounds, multiplier = 30, 4.0
    plan = cn.NoisePlan("gaussian", (1.0,), cn.Participation(rounds), 1.0,
                        cn.sensitivity(np.ones(1), cn.Participation(rounds)), multiplier, 1e-5)
    assert plan.mu == pytest.approx(math.sqrt(rounds) / multiplier)
    exact = plan.epsilon
    assert exact <= rdp_epsilon([(multiplier, 1.0, rounds)], 1e-5, "rdp") <= exact * 1.25


def test_plan_reaches_the_target_epsilon() -> None:
    participation = cn.Participation(40, 4)
    plan = cn.plan_noise("banded-mf", participation, clip=0.5, target_epsilon=4.0, delta=1e-5)
    assert plan.epsilon == pytest.approx(4.0, rel=1e-6)
    assert plan.epsilon <= 4.0
    assert plan.sensitivity == pytest.approx(cn.sensitivity(np.array(plan.coefficients), participation, 0.5))


def test_banded_mf_has_less_prefix_error_than_independent_noise_at_the_same_privacy() -> None:
    """The point of the mechanism, on a cyclic pattern (4 groups, 64 rounds)."""
    participation = cn.Participation(64, 4)
    gaussian = cn.total_error(np.ones(1), participation)
    banded = cn.total_error(cn.coefficients_for("banded-mf", participation), participation)
    assert banded < 0.8 * gaussian


def test_the_noise_stream_is_c_inverse_times_z() -> None:
    participation = cn.Participation(9, 3)
    plan = cn.plan_noise("banded-mf", participation, clip=1.0, target_epsilon=2.0, delta=1e-5)
    key = bytes(range(32))
    stream = cn.NoiseStream(plan, dim=4, generator=SecureRandom(key))
    streamed = np.stack([stream.next() for _ in range(participation.rounds)])
    replay = SecureRandom(key)
    z = np.stack([np.asarray(replay.normal(0.0, plan.noise_std, size=4)) for _ in range(participation.rounds)])
    dense = cn.toeplitz_matrix(np.array(plan.coefficients), participation.rounds)
    assert np.allclose(streamed, np.linalg.solve(dense, z))
    with pytest.raises(RuntimeError, match="covers 9 rounds"):
        stream.next()
