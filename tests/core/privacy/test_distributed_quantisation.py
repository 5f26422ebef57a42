"""DDG encoding: the rotation is orthogonal and undone exactly, rounding is unbiased and
the conditional rounding meets KLS21's bound, encode → modular sum → decode returns the
sum of the clipped updates within the rounding error, the modular sum equals the integer
sum exactly unless something wraps (and a too-small modulus shows that it then does not),
the chosen γ keeps the stated wrap-around bound, and bad input is refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.linalg import hadamard

from fedrec.core.privacy.discrete_gaussian import discrete_gaussian_variance
from fedrec.core.privacy.quantisation import (
    Quantiser,
    choose_gamma,
    clip_to_norm,
    conditional_round,
    decode_sum,
    encode,
    modular_sum,
    padded_dim,
    quantise,
    randomized_round,
    reduce_modulo,
    rotate,
    rounding_norm_bound,
    unrotate,
    walsh_hadamard,
    wrap_around_probability,
)
from fedrec.core.privacy.secure_random import KEY_BYTES, SecureRandom

KEY = bytes(range(KEY_BYTES))
SEED = 20240615


def _updates(n: int, dim: int, scale: float = 1.0) -> np.ndarray:
    """Test inputs (public, not secret): a fixed numpy stream is fine here."""
    return (np.random.default_rng(7).normal(size=(n, dim)) * scale).astype(np.float32)


# --- rotation -------------------------------------------------------------------------------

def test_walsh_hadamard_is_the_normalised_hadamard_matrix() -> None:
    x = np.random.default_rng(0).normal(size=(3, 16))
    expected = x @ hadamard(16).T / 4.0
    np.testing.assert_allclose(walsh_hadamard(x), expected, atol=1e-12)
    np.testing.assert_allclose(walsh_hadamard(walsh_hadamard(x)), x, atol=1e-12)
    with pytest.raises(ValueError):
        walsh_hadamard(np.ones(12))


def test_rotation_pads_keeps_the_norm_and_is_undone() -> None:
    x = np.random.default_rng(1).normal(size=1000)
    y = rotate(x, SEED)
    assert y.shape == (1024,) and padded_dim(1000) == 1024 and padded_dim(1024) == 1024
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    np.testing.assert_allclose(unrotate(y, SEED, 1000), x, atol=1e-12)
    assert not np.allclose(unrotate(y, SEED + 1, 1000), x)  # another round's seed is another rotation


def test_rotation_spreads_a_spike_evenly() -> None:
    """A one-hot vector becomes ±1/√d' everywhere: no coordinate keeps the mass."""
    spike = np.zeros(300)
    spike[17] = 1.0
    np.testing.assert_allclose(np.abs(rotate(spike, SEED)), 1 / math.sqrt(512), rtol=1e-12)


# --- rounding -------------------------------------------------------------------------------

def test_randomized_rounding_is_unbiased_and_keeps_integers() -> None:
    x = np.array([0.25, -1.75, 3.5, 7.0, -2.0, 0.999])
    trials = 40_000
    rng = SecureRandom(KEY)
    rounded = np.stack([randomized_round(x, rng) for _ in range(trials)])
    assert rounded.dtype == np.int64
    np.testing.assert_array_equal(rounded[:, 3], 7)
    np.testing.assert_array_equal(rounded[:, 4], -2)
    assert np.all(np.abs(rounded - x) < 1)
    fraction = x - np.floor(x)
    standard_error = np.sqrt(fraction * (1 - fraction) / trials) + 1e-12
    assert np.all(np.abs(rounded.mean(axis=0) - x) < 6 * standard_error + 1e-12)


def test_conditional_rounding_meets_the_bound_that_plain_rounding_sometimes_breaks() -> None:
    """c/γ = 100 in d = 64: KLS21's probable bound (≈ 100.6) is below the sure one (108),
    so about one plain rounding in ten exceeds it; a conditional rounding never does."""
    dim, scaled_clip = 64, 100.0
    bound = rounding_norm_bound(scaled_clip, dim, math.exp(-0.5))
    assert bound == pytest.approx(math.sqrt(100.0 ** 2 + 16 + (100 + 4)))
    assert bound < scaled_clip + math.sqrt(dim)
    x = np.random.default_rng(2).normal(size=dim)
    x *= scaled_clip / np.linalg.norm(x)
    rng = SecureRandom(KEY)
    plain = np.array([np.linalg.norm(randomized_round(x, rng)) for _ in range(2000)])
    conditional = np.array([np.linalg.norm(conditional_round(x, bound, rng)) for _ in range(2000)])
    assert 0.01 < np.mean(plain > bound) <= math.exp(-0.5)
    assert np.all(conditional <= bound)


def test_the_norm_bound_terms() -> None:
    assert rounding_norm_bound(10.0, 100, 0.0) == pytest.approx(20.0)  # β = 0: the sure bound only
    assert rounding_norm_bound(1e4, 65536, math.exp(-0.5)) < 1e4 * 1.0002
    assert rounding_norm_bound(1e4, 65536, 1e-9) > rounding_norm_bound(1e4, 65536, 0.5)


# --- encode, sum, decode --------------------------------------------------------------------

@pytest.mark.parametrize("rotation", [True, False])
def test_encode_sum_decode_returns_the_clipped_sum_within_the_rounding_error(rotation: bool) -> None:
    n, dim = 6, 1000
    quantiser = Quantiser(clip=1.0, gamma=1e-3, bits=20, dim=dim, rotate=rotation)
    updates = _updates(n, dim, scale=0.1)  # norms ≈ 3.2: every update is clipped
    rng = SecureRandom(KEY)
    encoded = [encode(u, quantiser, 0.0, rng, SEED) for u in updates]
    decoded = decode_sum(modular_sum(encoded, quantiser.bits), quantiser, SEED)
    clipped = np.sum([clip_to_norm(u, 1.0) for u in updates], axis=0)
    error = decoded - clipped
    # sure bound: each client's rounding moves its grid vector by < √d' in L2
    assert np.linalg.norm(error) < quantiser.gamma * n * math.sqrt(quantiser.encoded_dim)
    # and typically far less: per coordinate ≤ γ²·n/4 of variance (a 3× slack on the norm)
    assert np.linalg.norm(error) < 3 * quantiser.gamma * math.sqrt(n * quantiser.encoded_dim / 4)
    # the signal survives: the error is small against the sum itself
    assert np.linalg.norm(error) < 0.05 * np.linalg.norm(clipped)


def test_decoded_noise_has_the_variance_of_the_summed_shares() -> None:
    n, dim, sigma = 5, 4096, 50.0
    quantiser = Quantiser(clip=1.0, gamma=1e-3, bits=24, dim=dim)
    updates = _updates(n, dim, scale=0.01)
    rng = SecureRandom(KEY, stream=3)
    decoded = decode_sum(modular_sum([encode(u, quantiser, sigma, rng, SEED) for u in updates], 24),
                         quantiser, SEED)
    residual = (decoded - np.sum([clip_to_norm(u, 1.0) for u in updates], axis=0)) / quantiser.gamma
    low = n * discrete_gaussian_variance(sigma)
    high = low + n / 4  # plus at most 1/4 per client of rounding variance
    tolerance = 6 * math.sqrt(2 / dim)
    assert low * (1 - tolerance) < residual.var() < high * (1 + tolerance)


def test_the_modular_sum_is_the_integer_sum_when_nothing_wraps() -> None:
    n, dim = 8, 300
    quantiser = Quantiser(clip=1.0, gamma=1e-2, bits=16, dim=dim)
    updates = _updates(n, dim)
    plain = [quantise(u, quantiser, 3.0, SecureRandom(KEY, stream=i), SEED) for i, u in enumerate(updates)]
    encoded = [encode(u, quantiser, 3.0, SecureRandom(KEY, stream=i), SEED) for i, u in enumerate(updates)]
    for p, e in zip(plain, encoded):  # same key, same stream: encode is quantise reduced mod m
        np.testing.assert_array_equal(reduce_modulo(p, 16), e)
        assert e.min() >= -2 ** 15 and e.max() < 2 ** 15
    integer_sum = np.sum(plain, axis=0)
    assert np.abs(integer_sum).max() < 2 ** 15  # no wrap-around in this configuration
    np.testing.assert_array_equal(modular_sum(encoded, 16), integer_sum)


def test_a_too_small_modulus_wraps_and_the_sum_is_then_only_right_modulo_m() -> None:
    n, dim, bits = 8, 300, 6  # m/2 = 32 against coordinates of the sum with std ≈ 36
    quantiser = Quantiser(clip=1.0, gamma=1e-2, bits=bits, dim=dim)
    updates = _updates(n, dim)
    plain = [quantise(u, quantiser, 3.0, SecureRandom(KEY, stream=i), SEED) for i, u in enumerate(updates)]
    summed = modular_sum([reduce_modulo(p, bits) for p in plain], bits)
    integer_sum = np.sum(plain, axis=0)
    assert not np.array_equal(summed, integer_sum)
    np.testing.assert_array_equal(np.mod(summed - integer_sum, 2 ** bits), 0)
    assert wrap_around_probability(quantiser, n, 3.0) == 1.0  # the bound saw it coming


# --- γ and the wrap-around bound ------------------------------------------------------------

def test_choose_gamma_is_the_smallest_step_that_meets_the_target() -> None:
    clip, dim, n, share, bits = 1.0, 55_506, 943, 0.2, 20
    choice = choose_gamma(clip, dim, n, share, bits, target_wrap_probability=1e-9)
    assert choice.wrap_probability <= 1e-9
    finer = Quantiser(clip=clip, gamma=choice.gamma * 0.99, bits=bits, dim=dim)
    assert wrap_around_probability(finer, n, share / finer.gamma) > 1e-9
    more_bits = choose_gamma(clip, dim, n, share, 24, target_wrap_probability=1e-9)
    assert more_bits.gamma < choice.gamma / 15  # 16× the modulus: a ≈16× finer grid
    no_rotation = choose_gamma(clip, dim, n, share, bits, target_wrap_probability=1e-9, rotate=False)
    assert no_rotation.gamma > 10 * choice.gamma  # without rotation the worst case is one spiked coordinate


def test_the_wrap_bound_holds_for_aligned_updates_empirically() -> None:
    """Worst case for the data term: every client sends the same direction. With a loose
    target (0.5) the stated bound must still cover the observed frequency of rounds in
    which some coordinate of the integer sum left [−m/2, m/2)."""
    n, dim, bits, share = 6, 64, 10, 0.05
    choice = choose_gamma(1.0, dim, n, share, bits, target_wrap_probability=0.5)
    quantiser = Quantiser(clip=1.0, gamma=choice.gamma, bits=bits, dim=dim)
    sigma = share / choice.gamma
    direction = np.ones(dim, dtype=np.float32)
    rng = SecureRandom(KEY, stream=4)
    rounds, wrapped = 300, 0
    for r in range(rounds):
        total = np.sum([quantise(direction, quantiser, sigma, rng, r) for _ in range(n)], axis=0)
        wrapped += bool(np.any((total < -(2 ** (bits - 1))) | (total >= 2 ** (bits - 1))))
    assert wrapped > 0  # the regime is tight enough that wraps happen (≈ 4 % of rounds with this key)
    assert wrapped / rounds <= choice.wrap_probability + 3 * math.sqrt(0.25 / rounds)


def test_a_modulus_too_small_for_the_clients_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        choose_gamma(1.0, 1000, 600, 0.1, bits=10)
    with pytest.raises(ValueError):
        choose_gamma(1.0, 1000, 10, 0.1, bits=16, target_wrap_probability=0.0)


# --- bad input ------------------------------------------------------------------------------

def test_bad_updates_are_refused() -> None:
    quantiser = Quantiser(clip=1.0, gamma=1e-3, bits=16, dim=10)
    rng = SecureRandom(KEY)
    good = np.zeros(10, dtype=np.float32)
    assert encode(good, quantiser, 1.0, rng).shape == (16,)
    bad_values = [np.full(10, np.nan), np.array([np.inf] + [0.0] * 9), np.zeros(9), np.zeros((10, 1)),
                  np.zeros(10, dtype=np.int64), np.zeros(10, dtype=bool), np.zeros(10, dtype=np.complex128),
                  [0.0] * 10]
    for bad in bad_values:
        with pytest.raises(ValueError):
            encode(bad, quantiser, 1.0, rng)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode(good, quantiser, 1.0, np.random.default_rng(0))  # type: ignore[arg-type]
    for noise in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            encode(good, quantiser, noise, rng)


@pytest.mark.parametrize("changes", [
    {"bits": 3}, {"bits": 49}, {"bits": 16.0}, {"bits": True}, {"gamma": 0.0}, {"gamma": -1e-3},
    {"gamma": float("nan")}, {"clip": 0.0}, {"clip": float("inf")}, {"beta": 1.0}, {"beta": -0.1},
    {"dim": 0}, {"gamma": 1e-12},  # c/γ = 10^12 grid units: beyond 2^30
])
def test_bad_parameters_are_refused(changes: dict) -> None:
    arguments = {"clip": 1.0, "gamma": 1e-3, "bits": 16, "dim": 10, **changes}
    with pytest.raises(ValueError):
        Quantiser(**arguments)


def test_the_server_refuses_malformed_sums() -> None:
    quantiser = Quantiser(clip=1.0, gamma=1e-3, bits=16, dim=10)
    with pytest.raises(ValueError):
        modular_sum([np.zeros(16, dtype=np.int64), np.full(16, 2 ** 15)], 16)  # outside [−m/2, m/2)
    with pytest.raises(ValueError):
        modular_sum([np.zeros(16, dtype=np.int64), np.zeros(8, dtype=np.int64)], 16)
    with pytest.raises(ValueError):
        modular_sum([np.zeros(16)], 16)  # floats are not a modular sum
    with pytest.raises(ValueError):
        modular_sum([], 16)
    with pytest.raises(ValueError):
        decode_sum(np.zeros(10, dtype=np.int64), quantiser)  # the rotated length is 16
