"""The DDG accountant: brute-force Rényi divergences of discrete Gaussians against the
closed forms the ρ bound rests on (and a case where the sum of two discrete Gaussians
breaks the τ-free formula but not KLS21's bound), monotonicity, the inversion by
``sigma_for_epsilon``, the conversion against dp-accounting's, the dropout rule and a
plan for the ML-100K-sized example."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from scipy.special import logsumexp

from fedrec.core.privacy.distributed_accounting import (
    Sensitivity,
    epsilon,
    noise_share_std,
    plan_distributed_dp,
    round_rho,
    sensitivity,
    sigma_for_epsilon,
    tau,
    zcdp_epsilon,
)
from fedrec.core.privacy.quantisation import Quantiser

DELTA = 1e-5


def _log_pmf(x: np.ndarray, sigma: float) -> np.ndarray:
    """log N_Z(0, σ²)(x), the normaliser summed in log space over ±(40σ + 200)."""
    radius = int(40 * sigma) + 200
    support = np.arange(-radius, radius + 1, dtype=np.float64)
    return -x.astype(np.float64) ** 2 / (2 * sigma * sigma) - logsumexp(-support ** 2 / (2 * sigma * sigma))


def _renyi(log_p: np.ndarray, log_q: np.ndarray, order: float) -> float:
    """D_α(P ‖ Q) = log Σ p^α q^{1−α} / (α − 1), from log-pmfs on a common support."""
    return float(logsumexp(order * log_p + (1 - order) * log_q) / (order - 1))


@pytest.mark.parametrize("sigma", [0.6, 1.0, 2.5])
@pytest.mark.parametrize("shift", [1, 2, 3])
def test_renyi_divergence_of_shifted_discrete_gaussians_is_the_gaussian_closed_form(sigma: float,
                                                                                   shift: int) -> None:
    """D_α(N_Z(Δ, σ²) ‖ N_Z(0, σ²)) = αΔ²/(2σ²) at integer α (the normaliser is invariant
    under integer shifts), and ≤ that at fractional α: the fact ρ = Δ²/(2σ²) rests on."""
    x = np.arange(-400, 401)
    log_p, log_q = _log_pmf(x - shift, sigma), _log_pmf(x, sigma)
    for order in (2, 3, 5, 8):
        assert _renyi(log_p, log_q, order) == pytest.approx(order * shift ** 2 / (2 * sigma ** 2), rel=1e-9)
    for order in (1.5, 2.5, 4.3):
        assert _renyi(log_p, log_q, order) <= order * shift ** 2 / (2 * sigma ** 2) * (1 + 1e-12)


def test_the_sum_of_two_discrete_gaussians_needs_the_tau_term() -> None:
    """Z = X₁ + X₂, Xᵢ ~ N_Z(0, 1/4): at α = 3, Δ = 1 the divergence (≈ 3.199) exceeds the
    τ-free Gaussian value α·Δ²/(2·2σ²) = 3 — the sum is not a discrete Gaussian — and stays
    within KLS21's bound α·ρ with τ (≈ 3.64)."""
    sigma, n = 0.5, 2
    x = np.arange(-150, 151)
    log_single = _log_pmf(x, sigma)
    log_sum = logsumexp(log_single[None, :] + _log_pmf(x[:, None] - x[None, :], sigma), axis=1)
    for shift in (1, 2):
        inner = slice(shift, len(x) - shift)
        log_shifted = np.concatenate([np.full(shift, -np.inf), log_sum[:-shift]])
        rho = round_rho(sigma, n, Sensitivity(l2=shift, l1=shift), dim=1)
        for order in (1.5, 2.0, 3.0, 5.0, 20.0):
            divergence = _renyi(log_shifted[inner], log_sum[inner], order)
            assert divergence <= order * rho + 1e-9
    log_shifted = np.concatenate([[-np.inf], log_sum[:-1]])
    divergence = _renyi(log_shifted[1:-1], log_sum[1:-1], 3.0)
    assert divergence > 3.0 * 1 / (2 * n * sigma ** 2) + 0.1
    assert tau(sigma, n) == pytest.approx(10 * math.exp(-math.pi ** 2 / 4))


def test_tau_vanishes_for_moderate_sigma_and_grows_with_clients() -> None:
    assert tau(1.0, 1) == 0.0
    assert tau(2.0, 1000) < 1e-15
    assert tau(0.6, 100) < tau(0.6, 1000)
    assert tau(0.6, 1000) > tau(0.7, 1000)


def test_round_rho_is_the_gaussian_rho_when_tau_vanishes() -> None:
    bound = Sensitivity(l2=8500.0, l1=8500.0 * 256)
    rho = round_rho(1800.0, 943, bound, dim=65536)
    assert rho == pytest.approx(8500.0 ** 2 / (2 * 943 * 1800.0 ** 2), rel=1e-12)


def _quantiser(clip: float = 1.0, beta: float = math.exp(-0.5), gamma: float = 1e-3) -> Quantiser:
    return Quantiser(clip=clip, gamma=gamma, bits=20, dim=5000, beta=beta)


def test_epsilon_is_monotone_in_sigma_rounds_and_sensitivity() -> None:
    base = {"n_min": 100, "rounds": 50, "delta": DELTA, "quantiser": _quantiser()}
    by_sigma = [epsilon(s, **base) for s in (0.6, 1.0, 30.0, 100.0, 300.0, 1000.0)]
    assert all(a > b for a, b in zip(by_sigma, by_sigma[1:]))
    by_rounds = [epsilon(100.0, **{**base, "rounds": t}) for t in (1, 10, 50, 200)]
    assert all(a < b for a, b in zip(by_rounds, by_rounds[1:]))
    assert epsilon(100.0, **{**base, "rounds": 0}) == 0.0
    by_clip = [epsilon(100.0, **{**base, "quantiser": _quantiser(clip=c)}) for c in (0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(by_clip, by_clip[1:]))
    # a smaller β inflates the rounding bound B, hence ε
    assert epsilon(100.0, **{**base, "quantiser": _quantiser(beta=1e-6)}) > epsilon(100.0, **base)
    # fewer clients whose noise is counted: less noise in the sum, larger ε
    assert epsilon(100.0, **{**base, "n_min": 50}) > epsilon(100.0, **base)


def test_the_sensitivity_is_the_rounding_bound_and_the_l1_bound_of_an_integer_vector() -> None:
    quantiser = _quantiser()
    bound = sensitivity(quantiser)
    assert bound.l2 == quantiser.norm_bound > quantiser.scaled_clip
    assert bound.l1 == pytest.approx(min(bound.l2 ** 2, math.sqrt(8192) * bound.l2))
    coarse = Quantiser(clip=1.0, gamma=1.0, bits=20, dim=100, rotate=False)  # B = √32 < √d = 10
    assert sensitivity(coarse).l2 == pytest.approx(math.sqrt(32))
    assert sensitivity(coarse).l1 == pytest.approx(32.0)  # B² < √d·B


@pytest.mark.parametrize("target", [0.5, 2.0, 8.0])
def test_sigma_for_epsilon_inverts_epsilon(target: float) -> None:
    arguments = {"n_min": 200, "rounds": 100, "delta": DELTA, "quantiser": _quantiser()}
    sigma = sigma_for_epsilon(target, **arguments)
    assert epsilon(sigma, **arguments) <= target
    assert epsilon(sigma, **arguments) == pytest.approx(target, rel=1e-6)
    assert epsilon(sigma * (1 - 1e-6), **arguments) > target


def test_sigma_for_epsilon_floors_at_one_half() -> None:
    """A target so loose that any σ ≥ 1/2 meets it returns 1/2 (the bound's domain)."""
    arguments = {"n_min": 10, "rounds": 1, "delta": DELTA,
                 "quantiser": Quantiser(clip=1.0, gamma=1.0, bits=16, dim=4, rotate=False)}
    assert sigma_for_epsilon(1e4, **arguments) == 0.5
    with pytest.raises(ValueError):
        epsilon(0.4, **arguments)


def test_the_conversion_matches_dp_accounting_and_beats_the_classic_bound() -> None:
    """A Gaussian with noise multiplier z over T steps is (T/(2z²))-zCDP. Our conversion
    minimises over real α, dp-accounting's RDP accountant over a grid of orders with the
    same formula: ours is ≤ theirs and within 0.5 %; both are below ρ + 2√(ρ ln 1/δ)."""
    orders = [1 + x / 20 for x in range(1, 200)] + list(range(11, 400))
    for z, steps in ((2.0, 100), (0.8, 10), (10.0, 1000)):
        accountant = dp_accounting.rdp.RdpAccountant(orders=orders)
        accountant.compose(dp_accounting.GaussianDpEvent(z), steps)
        theirs = accountant.get_epsilon(DELTA)
        rho = steps / (2 * z * z)
        ours = zcdp_epsilon(rho, DELTA)
        assert ours <= theirs + 1e-9
        assert ours == pytest.approx(theirs, rel=5e-3)
        assert ours < rho + 2 * math.sqrt(rho * math.log(1 / DELTA))
    assert zcdp_epsilon(0.0, DELTA) == 0.0


def test_the_dropout_rule_over_provisions_each_share() -> None:
    """σ_share = σ_total/√n_min: any n_min survivors carry σ_total² in total, and with τ = 0
    only the total matters, so ε equals that of one client holding all the noise."""
    total, n_min = 6000.0, 900
    share = noise_share_std(total, n_min)
    assert share * math.sqrt(n_min) == pytest.approx(total)
    quantiser = _quantiser()
    spread = epsilon(share, n_min=n_min, rounds=100, delta=DELTA, quantiser=quantiser)
    single = epsilon(total, n_min=1, rounds=100, delta=DELTA, quantiser=quantiser)
    assert spread == pytest.approx(single, rel=1e-9)
    # if only half the survivors' noise is counted, the same share gives a larger ε
    assert epsilon(share, n_min=n_min // 2, rounds=100, delta=DELTA, quantiser=quantiser) > 1.3 * spread


def test_the_plan_for_the_ml100k_example() -> None:
    """n = 943 users every round, T = 100, c = 1, d = 55,506 (padded to 65,536), 20 bits,
    ε = 8 at δ = 10⁻⁵: the plan meets both targets, and the noise it needs is within 0.1 %
    of the central Gaussian's for the same ε (the rounding inflates the sensitivity by
    ≈ 0.02 %, the τ term is 0 at σ ≈ 1800 grid units)."""
    plan = plan_distributed_dp(8.0, delta=DELTA, rounds=100, n_min=943, n_clients=943, clip=1.0,
                               dim=55_506, bits=20)
    assert plan.epsilon <= 8.0 and plan.epsilon == pytest.approx(8.0, rel=1e-6)
    assert plan.wrap_probability <= 1e-9
    assert plan.quantiser.encoded_dim == 65_536
    total = plan.noise_std_update_units * math.sqrt(943)
    central_rho = 100 / (2 * total ** 2)  # sensitivity c = 1, no rounding
    assert zcdp_epsilon(central_rho, DELTA) == pytest.approx(8.0, rel=1e-3)
    assert zcdp_epsilon(central_rho, DELTA) < 8.0


def test_bad_arguments_are_refused() -> None:
    quantiser = _quantiser()
    for bad in ({"n_min": 0}, {"rounds": -1}, {"delta": 0.0}, {"delta": 1.0}, {"n_min": 2.5}):
        with pytest.raises(ValueError):
            epsilon(10.0, **{"n_min": 10, "rounds": 1, "delta": DELTA, "quantiser": quantiser, **bad})
    with pytest.raises(ValueError):
        epsilon(float("nan"), n_min=10, rounds=1, delta=DELTA, quantiser=quantiser)
    with pytest.raises(ValueError):
        sigma_for_epsilon(0.0, n_min=10, rounds=1, delta=DELTA, quantiser=quantiser)
    with pytest.raises(ValueError, match="n_min"):
        plan_distributed_dp(8.0, delta=DELTA, rounds=10, n_min=20, n_clients=10, clip=1.0, dim=100, bits=20)
    with pytest.raises(ValueError, match="too small"):
        plan_distributed_dp(8.0, delta=DELTA, rounds=10, n_min=10, n_clients=943, clip=1.0, dim=100, bits=10)
