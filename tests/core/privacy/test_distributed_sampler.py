"""The discrete Gaussian sampler: its draws follow the exact N_Z(0, σ²) pmf (chi-square,
with a negative control the same test rejects), mean 0, the exact discrete variance, and
every bit from SecureRandom. Fixed keys make every statistical check reproducible; the
thresholds (p > 1e-6, 6 standard errors) would fail a correct sampler with probability
well below 1e-6 on a fresh key."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chisquare

from fedrec.core.privacy.discrete_gaussian import (
    discrete_gaussian_pmf,
    discrete_gaussian_variance,
    sample_discrete_gaussian,
)
from fedrec.core.privacy.secure_random import KEY_BYTES, SecureRandom

KEY = bytes(range(KEY_BYTES))
DRAWS = 200_000


def _chi_square_pvalue(draws: np.ndarray, sigma: float) -> float:
    """Chi-square of the draws against N_Z(0, σ²), the tails merged into two bins so that
    every expected count is ≥ 20."""
    radius = 0
    while DRAWS * discrete_gaussian_pmf(np.array([radius + 1]), sigma)[0] >= 20:
        radius += 1
    inner = np.arange(-radius, radius + 1)
    pmf = discrete_gaussian_pmf(inner, sigma)
    tail = (1.0 - pmf.sum()) / 2.0
    observed = np.concatenate([[np.sum(draws < -radius)], [np.sum(draws == v) for v in inner],
                               [np.sum(draws > radius)]])
    expected = DRAWS * np.concatenate([[tail], pmf, [tail]])
    return float(chisquare(observed, expected).pvalue)


@pytest.mark.parametrize("sigma", [0.7, 3.0, 12.5])
def test_the_draws_follow_the_exact_discrete_gaussian_pmf(sigma: float) -> None:
    draws = sample_discrete_gaussian(sigma, DRAWS, SecureRandom(KEY))
    assert draws.dtype == np.int64 and draws.shape == (DRAWS,)
    assert _chi_square_pvalue(draws, sigma) > 1e-6


def test_the_chi_square_rejects_a_rounded_continuous_gaussian() -> None:
    """Negative control: ``round(N(0, σ²))`` is a different law (variance σ² + 1/12 − …);
    the same test with the same sample size rejects it, so the test above has power."""
    sigma = 0.7
    rounded = np.rint(np.asarray(SecureRandom(KEY).normal(0.0, sigma, DRAWS))).astype(np.int64)
    assert _chi_square_pvalue(rounded, sigma) < 1e-6


@pytest.mark.parametrize("sigma", [0.5, 2.0, 40.0])
def test_mean_zero_and_the_exact_discrete_variance(sigma: float) -> None:
    draws = sample_discrete_gaussian(sigma, DRAWS, SecureRandom(KEY, stream=1)).astype(np.float64)
    variance = discrete_gaussian_variance(sigma)
    assert abs(draws.mean()) < 6 * math.sqrt(variance / DRAWS)
    centred_fourth = np.mean(draws ** 4)  # the mean is 0: E[X^4] gives the variance's standard error
    standard_error = math.sqrt((centred_fourth - variance ** 2) / DRAWS)
    assert abs(draws.var() - variance) < 6 * standard_error


def test_the_discrete_variance_is_below_sigma_squared_and_the_sampler_sees_it() -> None:
    """At σ = 1/2 the discrete variance is ≈ 0.215, 14 % below σ² = 0.25: the draws must
    match the former (a sampler of a rounded or continuous Gaussian would not)."""
    sigma = 0.5
    variance = discrete_gaussian_variance(sigma)
    assert 0.20 < variance < 0.23 < sigma ** 2
    assert discrete_gaussian_variance(3.0) == pytest.approx(9.0, rel=1e-12)  # gap e^{-2π²σ²}-small
    draws = sample_discrete_gaussian(sigma, DRAWS, SecureRandom(KEY, stream=2)).astype(np.float64)
    assert abs(draws.var() - variance) < 0.01 < abs(draws.var() - sigma ** 2)


def test_the_pmf_is_normalised_and_matches_its_definition() -> None:
    sigma = 1.3
    support = np.arange(-200, 201)
    pmf = discrete_gaussian_pmf(support, sigma)
    assert pmf.sum() == pytest.approx(1.0, abs=1e-14)
    normaliser = sum(math.exp(-y * y / (2 * sigma * sigma)) for y in range(-200, 201))
    assert pmf[200 + 3] == pytest.approx(math.exp(-9 / (2 * sigma * sigma)) / normaliser, rel=1e-13)


def test_a_fixed_key_replays_and_other_streams_differ() -> None:
    a = sample_discrete_gaussian(5.0, 10_000, SecureRandom(KEY))
    b = sample_discrete_gaussian(5.0, 10_000, SecureRandom(KEY))
    c = sample_discrete_gaussian(5.0, 10_000, SecureRandom(KEY, stream=9))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_large_sigma_and_tiny_requests() -> None:
    assert sample_discrete_gaussian(3.0, 0, SecureRandom(KEY)).shape == (0,)
    assert sample_discrete_gaussian(3.0, 1, SecureRandom(KEY)).shape == (1,)
    big = sample_discrete_gaussian(1e6, 50_000, SecureRandom(KEY)).astype(np.float64)
    assert abs(big.std() / 1e6 - 1.0) < 6 * math.sqrt(0.5 / 50_000)


def test_bad_arguments_are_refused() -> None:
    rng = SecureRandom(KEY)
    for sigma in (0.0, -1.0, float("nan"), float("inf"), 2.0 ** 41, True, "3"):
        with pytest.raises(ValueError):
            sample_discrete_gaussian(sigma, 10, rng)  # type: ignore[arg-type]
    for size in (-1, 2.5, True):
        with pytest.raises(ValueError):
            sample_discrete_gaussian(1.0, size, rng)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sample_discrete_gaussian(1.0, 10, np.random.default_rng(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        discrete_gaussian_pmf(np.array([0.5]), 1.0)
