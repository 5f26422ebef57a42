"""SecureRandom: a keyed ChaCha20 stream behind every secret draw; statistical checks of
its samplers with tolerances stated in each test (failure probabilities ≪ 1e-6 for a
correct sampler)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedrec.core.privacy.secure_random import KEY_BYTES, SecureRandom, secure_generator

KEY = bytes(range(KEY_BYTES))


def test_a_fixed_key_replays_and_a_fresh_key_does_not() -> None:
    a, b = SecureRandom(KEY).normal(size=1000), SecureRandom(KEY).normal(size=1000)
    np.testing.assert_array_equal(a, b)
    fresh1, fresh2 = secure_generator().normal(size=100_000), secure_generator().normal(size=100_000)
    # unrelated streams: correlation ~ N(0, 1/n); 6/sqrt(n) ≈ 0.019 is a 6-sigma bound
    assert abs(np.corrcoef(fresh1, fresh2)[0, 1]) < 6 / math.sqrt(100_000)
    assert not np.array_equal(SecureRandom(KEY, stream=1).normal(size=10), SecureRandom(KEY).normal(size=10))


def test_the_stream_is_chacha20_of_the_key() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    expected = Cipher(algorithms.ChaCha20(KEY, bytes(16)), mode=None).encryptor().update(bytes(64))
    assert SecureRandom(KEY).bytes(64) == expected


def test_bad_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SecureRandom(b"short")
    with pytest.raises(ValueError, match="stream"):
        SecureRandom(KEY, stream=-1)


def test_normal_moments_and_tails() -> None:
    n = 2_000_000
    z = SecureRandom(KEY).normal(0.0, 1.0, size=n)
    # mean: std 1/sqrt(n); 6 sigma
    assert abs(z.mean()) < 6 / math.sqrt(n)
    # variance: std of the sample variance ≈ sqrt(2/n); 6 sigma
    assert abs(z.var() - 1) < 6 * math.sqrt(2 / n)
    # tails: P(|z| > t) for t = 1, 2, 3, 4 within 6 binomial standard deviations (+ 1e-6 slack)
    for t in (1.0, 2.0, 3.0, 4.0):
        p = math.erfc(t / math.sqrt(2))
        observed = float(np.mean(np.abs(z) > t))
        assert abs(observed - p) < 6 * math.sqrt(p * (1 - p) / n) + 1e-6, (t, observed, p)
    # skewness and excess kurtosis near 0 (std ≈ sqrt(6/n), sqrt(24/n))
    assert abs(np.mean(z ** 3)) < 6 * math.sqrt(15 / n)
    assert abs(np.mean(z ** 4) - 3) < 6 * math.sqrt(96 / n)


def test_normal_scale_and_shapes() -> None:
    draw = SecureRandom(KEY)
    x = draw.normal(2.0, 3.0, size=(400, 500))
    assert x.shape == (400, 500)
    assert abs(x.mean() - 2.0) < 6 * 3 / math.sqrt(x.size)
    assert abs(x.std() - 3.0) < 0.03
    assert isinstance(draw.normal(), float)
    odd = [draw.standard_normal(size=3) for _ in range(5)]  # the spare half of a pair is used, not lost
    assert all(v.shape == (3,) for v in odd)
    t = draw.torch_normal((7, 3), 0.5)
    assert t.shape == (7, 3) and t.dtype == torch.float32


def test_uniform_integers_bernoulli() -> None:
    draw = SecureRandom(KEY)
    u = draw.random(1_000_000)
    assert u.min() > 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 6 * math.sqrt(1 / 12 / len(u))
    counts = np.bincount(draw.integers(0, 7, size=700_000), minlength=7)
    chi2 = float(np.sum((counts - 100_000) ** 2 / 100_000))
    assert chi2 < 40  # chi-square, 6 degrees of freedom: P(> 40) ≈ 5e-7
    mask = draw.bernoulli(0.3, 1_000_000)
    assert abs(mask.mean() - 0.3) < 6 * math.sqrt(0.21 / 1_000_000)
    assert sorted(draw.permutation(50).tolist()) == list(range(50))
    subset = draw.choice(np.arange(10, 20), 5, replace=False)
    assert len(set(subset.tolist())) == 5 and all(10 <= v < 20 for v in subset)
    with pytest.raises(ValueError):
        draw.integers(5, 5)
    with pytest.raises(ValueError):
        draw.bernoulli(1.5, 3)
