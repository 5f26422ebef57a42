"""Adaptive clipping for user-central DP (Andrew, Thakkar, McMahan, Ramaswamy, NeurIPS 2021).

The clip norm ``C`` follows a target quantile ``γ`` of the users' update norms,
privately. Each round, every sampled user also reports the bit ``b = 1[‖Δ‖ ≤ C]``;
the server releases the noised fraction

    b̃ = (Σ b + N(0, σ_b²)) / (q·n)

and steps the clip geometrically, ``C ← C · exp(−η_C (b̃ − γ))`` (the paper's
defaults: ``γ = 0.5``, ``η_C = 0.2``, ``σ_b = q·n / 20``).

Privacy: the server releases the *centred* bit sum ``S = Σ (b − ½) + N(0, σ_b²)``,
whose sensitivity under adding or removing one user is ½, and estimates the fraction as
``b̃ = S / (q·n) + ½`` — unbiased, and computed from the expected number of sampled
users ``q·n``, never the realised one (which is private under Poisson sampling). The
update sum (sensitivity ``C``, noise ``σ_Δ C``) and ``S`` released together are one
Gaussian mechanism with noise multiplier ``σ = (σ_Δ⁻² + (2σ_b)⁻²)^(−½)`` (the paper's
Theorem 1), so the accountant keeps running on ``σ`` (derived from ε as without
adaptation) and the update sum gets the slightly larger
``σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−½)``, which requires ``2σ_b > σ``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedrec.core.privacy.secure_random import SecureRandom

LEARNING_RATE = 0.2
COUNT_NOISE_SHARE = 1 / 20  # σ_b = expected users per round / 20


@dataclass
class AdaptiveClip:
    """The current clip norm and how it moves; ``count_noise_std`` is σ_b."""

    clip: float
    target_quantile: float
    count_noise_std: float
    learning_rate: float = LEARNING_RATE

    @classmethod
    def for_round_size(cls, clip: float, target_quantile: float, expected_users: float) -> "AdaptiveClip":
        if not 0 < target_quantile < 1:
            raise ValueError(f"clip-quantile must be in (0, 1), got {target_quantile}")
        return cls(clip, target_quantile, COUNT_NOISE_SHARE * expected_users)

    def update_noise_multiplier(self, sigma: float) -> float:
        """``σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−½)``: the update sum's share of the accounted σ."""
        if not 2 * self.count_noise_std > sigma:
            raise ValueError(
                f"adaptive clipping needs twice the count noise, 2σ_b = {2 * self.count_noise_std:.3g}, to exceed "
                f"σ = {sigma:.3g} (more users per round, or a larger ε)")
        return (sigma ** -2 - (2 * self.count_noise_std) ** -2) ** -0.5

    def step(self, centred_sum: float, expected_users: float, generator: "SecureRandom") -> float:
        """``C ← C·exp(−η_C(b̃ − γ))`` with ``b̃ = (Σ(b − ½) + N(0, σ_b²))/(q·n) + ½``."""
        fraction = (centred_sum + generator.normal(0.0, self.count_noise_std)) / expected_users + 0.5
        self.clip *= math.exp(-self.learning_rate * (fraction - self.target_quantile))
        return self.clip
