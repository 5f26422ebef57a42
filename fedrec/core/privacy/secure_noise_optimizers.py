"""Opacus' DP optimisers with their Gaussian noise drawn from a :class:`SecureRandom`.

Opacus' ``DPOptimizer`` adds ``N(0, σ²C²)`` to each parameter's clipped per-example
gradient sum with ``torch.normal(generator=...)``; a torch generator keeps 32 bits of its
seed, so whoever knows the seed can regenerate and subtract the noise. The subclasses here
(:class:`SecureNoiseDPOptimizer` for the ``hooks`` and ``functorch`` per-sample modes,
:class:`SecureNoiseGhostOptimizer` for ghost clipping) override only ``add_noise``: the
noise is one float64 draw from the caller's ChaCha20 :class:`SecureRandom`, added to the
clipped sum in float64 and rounded to the parameters' dtype. Used by
:class:`fedrec.core.privacy.record_level.PrivatePhase`.
"""

from __future__ import annotations

import numpy as np
import torch
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

from fedrec.core.privacy.secure_random import SecureRandom


class _SecureNoise:
    """``add_noise`` of Opacus' optimisers, with the noise drawn from a :class:`SecureRandom`.

    Opacus draws ``torch.normal(0, σC, generator=self.generator)`` per parameter; here
    one float64 draw of ``N(0, σ²C²)`` covers all parameters' coordinates (in
    ``self.params`` order), is added to each clipped sum ``p.summed_grad`` in float64
    and rounded to the parameter's dtype. The rest (``summed_grad`` → ``grad``, the
    processed-flag checks, the adjusted σ of adaptive clipping, skipped steps, scaling
    by ``expected_batch_size``, the accountant hook) is Opacus' own.
    """

    secure_rng: SecureRandom
    noise_multiplier: float
    max_grad_norm: float

    def add_noise(self) -> None:
        params = list(self.params)  # type: ignore[attr-defined]
        for p in params:
            _check_processed_flag(p.summed_grad)
        std = getattr(self, "_adjusted_noise_multiplier", self.noise_multiplier) * self.max_grad_norm
        sizes = [p.summed_grad.numel() for p in params]
        flat = torch.from_numpy(np.asarray(self.secure_rng.normal(0.0, std, size=sum(sizes)), dtype=np.float64)) \
            if std > 0 else None
        offset = 0
        for p, size in zip(params, sizes):
            summed = p.summed_grad
            if flat is None:
                noised = summed.clone()
            else:
                noise = flat[offset:offset + size].view(summed.shape).to(device=summed.device)
                noised = (summed.to(torch.float64) + noise).to(summed.dtype)
            offset += size
            p.grad = noised.view_as(p)
            _mark_as_processed(p.summed_grad)


class SecureNoiseDPOptimizer(_SecureNoise, DPOptimizer):
    """Opacus' ``DPOptimizer`` (per-example gradients: ``hooks``, ``functorch``), noise from ``secure_rng``."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, secure_rng: SecureRandom, **kwargs: object) -> None:
        super().__init__(optimizer, generator=None, secure_mode=False, **kwargs)
        self.secure_rng = secure_rng


class SecureNoiseGhostOptimizer(_SecureNoise, DPOptimizerFastGradientClipping):
    """Opacus' ghost-clipping optimiser, noise from ``secure_rng``."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, secure_rng: SecureRandom, **kwargs: object) -> None:
        super().__init__(optimizer, generator=None, secure_mode=False, **kwargs)
        self.secure_rng = secure_rng

