"""Clipping, dense noise and the server-side private aggregation, on worked numbers."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.core.privacy.aggregation import central_noised_mean, exceeds_clip, private_mean
from fedrec.core.privacy.mechanisms import add_gaussian_noise, clip_update, update_norm


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
    noised = add_gaussian_noise(zeros, 0.5, np.random.default_rng(0))["items"]
    assert np.count_nonzero(noised) == noised.size  # dense: no row shows it was untouched
    assert noised.std() == pytest.approx(0.5, rel=0.02)


def test_central_mean_divides_the_noised_sum_by_the_expected_count() -> None:
    template = {"w": np.zeros(3, dtype=np.float32)}
    updates = [{"w": np.array([1.0, 0.0, 0.0], dtype=np.float32)}, {"w": np.array([0.0, 2.0, 0.0], dtype=np.float32)}]
    # σ = 0: exactly (Σ w_k Δ_k) / (q n), whatever the realised count
    mean = central_noised_mean(updates, [1.0, 2.0], template, 0.0, 1.0, 4.0, np.random.default_rng(0))
    np.testing.assert_allclose(mean["w"], [0.25, 1.0, 0.0])
    # nobody sampled: the release is noise of std σC/(qn)
    big = {"w": np.zeros(20000, dtype=np.float32)}
    noise = central_noised_mean([], [], big, 2.0, 0.5, 4.0, np.random.default_rng(1))["w"]
    assert noise.std() == pytest.approx(2.0 * 0.5 / 4.0, rel=0.03)


def test_private_mean_weighs_users_not_examples() -> None:
    template = {"w": np.zeros(1, dtype=np.float32)}
    mean = private_mean([{"w": np.array([1.0], np.float32)}, {"w": np.array([4.0], np.float32)}], [1.0, 3.0], template)
    assert mean["w"][0] == pytest.approx((1.0 + 12.0) / 4.0)


def test_exceeds_clip_catches_an_unclipped_node_sum() -> None:
    # a node of 2 users sends the mean of their clipped updates: ‖mean‖·2 ≤ 2C
    assert not exceeds_clip({"w": np.array([1.0], np.float32)}, 2.0, 1.0)
    assert exceeds_clip({"w": np.array([1.5], np.float32)}, 2.0, 1.0)
