"""Adaptive clipping: the clip tracks the target quantile; σ is split between update and bits."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.core.privacy.adaptive_clip import AdaptiveClip
from fedrec.core.privacy.secure_random import SecureRandom


def test_clip_converges_to_the_target_quantile_of_the_norms() -> None:
    rng = np.random.default_rng(0)  # the users' norms (data, not a secret)
    noise = SecureRandom(bytes(32))
    clip = AdaptiveClip.for_round_size(clip=10.0, target_quantile=0.3, expected_users=200)
    for _ in range(300):
        norms = rng.lognormal(mean=0.0, sigma=0.5, size=200)  # the users' update norms this round
        bits = float(np.sum(norms <= clip.clip))
        clip.step(bits - len(norms) / 2, 200, noise)
    true_quantile = float(np.exp(0.5 * -0.5244))  # 30% quantile of lognormal(0, 0.5)
    assert clip.clip == pytest.approx(true_quantile, rel=0.15)


def test_the_update_noise_and_the_bit_noise_compose_to_the_accounted_sigma() -> None:
    clip = AdaptiveClip.for_round_size(clip=1.0, target_quantile=0.5, expected_users=100)  # σ_b = 5
    sigma = 1.2
    sigma_update = clip.update_noise_multiplier(sigma)
    assert sigma_update > sigma
    assert (sigma_update ** -2 + (2 * clip.count_noise_std) ** -2) ** -0.5 == pytest.approx(sigma)
    with pytest.raises(ValueError, match="2σ_b"):
        AdaptiveClip.for_round_size(1.0, 0.5, expected_users=10).update_noise_multiplier(1.2)  # 2σ_b = 1
    with pytest.raises(ValueError, match="clip-quantile"):
        AdaptiveClip.for_round_size(1.0, 1.5, 100)
