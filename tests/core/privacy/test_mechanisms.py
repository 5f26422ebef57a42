"""Clipping, dense noise and the server-side private aggregation, on worked numbers."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.core.privacy.aggregation import central_noised_mean, exceeds_clip, private_mean
from fedrec.core.privacy.mechanisms import add_gaussian_noise, clip_update, poisson_sample, update_norm
from fedrec.core.privacy.secure_random import SecureRandom


def test_norm_is_joint_over_all_arrays() -> None:
    update = {"a": np.array([3.0], dtype=np.float32), "b": np.array([[4.0]], dtype=np.float32)}
    assert update_norm(update) == pytest.approx(5.0)


def test_clip_scales_long_updates_to_c_and_keeps_short_ones() -> None:
    update = {"a": np.array([3.0], dtype=np.float32), "b": np.array([4.0], dtype=np.float32)}
    clipped, norm = clip_update(update, 1.0)
    assert norm == pytest.approx(5.0)
    assert clipped["a"][0] == pytest.approx(0.6) and clipped["b"][0] == pytest.approx(0.8)
    kept, _ = clip_update(update, 10.0)
    assert kept["a"][0] == 3.0 and kept["b"][0] == 4.0
    with pytest.raises(ValueError, match="clip"):
        clip_update(update, 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        clip_update({"a": np.array([np.nan], dtype=np.float32)}, 1.0)


def test_noise_reaches_every_entry_with_the_stated_std() -> None:
    zeros = {"items": np.zeros((400, 50), dtype=np.float32)}  # an update that touched no row
    noised = add_gaussian_noise(zeros, 0.5, SecureRandom(bytes(32)))["items"]
    assert np.count_nonzero(noised) == noised.size  # dense: no row shows it was untouched
    assert noised.std() == pytest.approx(0.5, rel=0.02)


def test_central_mean_divides_the_noised_sum_by_the_expected_count() -> None:
    template = {"w": np.zeros(3, dtype=np.float32)}
    updates = [{"w": np.array([1.0, 0.0, 0.0], dtype=np.float32)}, {"w": np.array([0.0, 2.0, 0.0], dtype=np.float32)}]
    # σ = 0: exactly (Σ w_k Δ_k) / (q n), whatever the realised count
    mean = central_noised_mean(updates, [1.0, 2.0], template, 0.0, 1.0, 4.0, SecureRandom(bytes(32)))
    np.testing.assert_allclose(mean["w"], [0.25, 1.0, 0.0])
    # nobody sampled: the release is noise of std σC/(qn)
    big = {"w": np.zeros(20000, dtype=np.float32)}
    noise = central_noised_mean([], [], big, 2.0, 0.5, 4.0, SecureRandom(bytes([1] * 32)))["w"]
    assert noise.std() == pytest.approx(2.0 * 0.5 / 4.0, rel=0.03)


def test_private_mean_weighs_users_not_examples() -> None:
    template = {"w": np.zeros(1, dtype=np.float32)}
    mean = private_mean([{"w": np.array([1.0], np.float32)}, {"w": np.array([4.0], np.float32)}], [1.0, 3.0], template)
    assert mean["w"][0] == pytest.approx((1.0 + 12.0) / 4.0)


def test_exceeds_clip_catches_an_unclipped_node_sum() -> None:
    # a node of 2 users sends the mean of their clipped updates: ‖mean‖·2 ≤ 2C
    assert not exceeds_clip({"w": np.array([1.0], np.float32)}, 2.0, 1.0)
    assert exceeds_clip({"w": np.array([1.5], np.float32)}, 2.0, 1.0)


def test_noise_from_a_non_cryptographic_generator_is_refused() -> None:
    with pytest.raises(TypeError, match="SecureRandom"):
        add_gaussian_noise({"w": np.zeros(3, dtype=np.float32)}, 1.0, np.random.default_rng(0))


def test_poisson_sample_rate_and_secrecy() -> None:
    draw = SecureRandom(bytes(32))
    picked = poisson_sample(list(range(100_000)), 0.2, draw)
    assert abs(len(picked) - 20_000) < 6 * (100_000 * 0.2 * 0.8) ** 0.5
    # unkeyed samples are unrelated run to run (overlap ≈ q² n, not q n)
    a, b = set(poisson_sample(list(range(100_000)), 0.2)), set(poisson_sample(list(range(100_000)), 0.2))
    assert abs(len(a & b) - 4_000) < 6 * (100_000 * 0.04) ** 0.5
