"""A record-level DP-SGD step with one backward pass: book-keeping clipping.

For a model built of ``nn.Embedding`` and ``nn.Linear`` layers, every per-example gradient
is a sum of outer products the forward and the backward already hold, so neither the
per-example gradients (Opacus ``hooks``/``functorch``) nor a second backward (Opacus
``ghost``) is needed (the idea of Bu et al. 2023, "Differentially private optimization on
large model at small cost": ghost norms, then the clipped sum from the stored terms).

Let example ``i`` feed its ``L`` rows (here ``1 + k`` items) through a layer: inputs
``a_ij``, gradients of ``Σ_i ℓ_i`` with respect to the layer's outputs ``g_ij`` (one
``torch.autograd.grad`` over every layer's output at once; no parameter gradient is formed).

* ``nn.Linear``, ``y = W a + b``: ``∇_W ℓ_i = Σ_j g_ij a_ijᵀ``, so
  ``‖∇_W ℓ_i‖² = Σ_{j,j'} (a_ij·a_ij')(g_ij·g_ij')`` and ``‖∇_b ℓ_i‖² = ‖Σ_j g_ij‖²``;
  the clipped sum ``Σ_i c_i ∇_W ℓ_i = (c ⊙ G)ᵀ A`` is one matrix product.
* ``nn.Embedding`` with indices ``r_ij``: ``∇_E ℓ_i = Σ_j e_{r_ij} g_ijᵀ``, so
  ``‖∇_E ℓ_i‖² = Σ_{j,j'} [r_ij = r_ij'] (g_ij·g_ij')`` (an item drawn twice in one example
  adds before the norm; :func:`~fedrec.core.privacy.record_level.lookup_norm_sample`, the
  norm sampler fedrec gives Opacus' ghost clipping), and the clipped sum is ``index_add`` of ``c_i g_ij`` at ``r_ij``.

With ``N_i² = Σ_layers ‖·‖²`` (all trainable parameters jointly, as Opacus clips) and
``c_i = min(1, C / N_i)``, the step's gradient is ``(Σ_i c_i ∇ℓ_i + N(0, σ²C²I)) / b``:
the same as Opacus' DP-SGD step (``tests/core/privacy/test_bookkeeping_step.py`` checks it
against a per-example autograd loop). The norms and sums run in float64; the noise is the
secure generator's (:meth:`~fedrec.core.privacy.secure_random.SecureRandom.normal_tensor`),
drawn in float64 and added before the gradient is rounded to float32.

A layer applied twice in one forward (shared weights) would need cross terms between its
uses; it is refused, as is a trainable parameter outside an ``Embedding``/``Linear``. Every
layer must run on tensors whose leading dimension is the example, as fedrec's rankers do: a
layer on a tensor of another leading size (a projection of the whole item table) is refused;
one whose rows were permuted across examples cannot be told apart, which is why each ranker
is checked against a per-example autograd loop (``tests/core/privacy/test_record_level.py``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fedrec.core.privacy.record_level import lookup_norm_sample, record_examples, record_losses
from fedrec.core.privacy.secure_random import SecureRandom

Layer = nn.Embedding | nn.Linear
Term = tuple[Layer, torch.Tensor, torch.Tensor]  # (layer, per-example inputs, per-example output gradients)


class BookkeepingStep:
    """Clipped, noised gradients of ``model``'s trainable parameters in one backward.

    ``clip`` is ``C``, ``noise_multiplier`` σ (noise std ``σC`` on the clipped sum), ``loss``
    the per-record loss (:func:`~fedrec.core.privacy.record_level.record_losses`). Call
    :meth:`gradients` for a batch; it sets every trainable parameter's ``.grad`` to
    ``(Σ_i c_i ∇ℓ_i + noise) / divisor`` and returns the per-record losses. Use as a
    context manager (or call :meth:`close`) to remove the forward hooks.
    """

    def __init__(self, model: nn.Module, clip: float, noise_multiplier: float, loss: str,
                 rng: SecureRandom) -> None:
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        if not noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be ≥ 0, got {noise_multiplier}")
        if not isinstance(rng, SecureRandom):
            raise TypeError(f"the noise comes from a SecureRandom, got {type(rng).__name__}")
        self.model, self.clip, self.noise_multiplier, self.loss, self.rng = model, clip, noise_multiplier, loss, rng
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.layers: list[Layer] = [m for m in model.modules() if isinstance(m, (nn.Embedding, nn.Linear))
                                    and any(p.requires_grad for p in m.parameters(recurse=False))]
        covered = {id(p) for layer in self.layers for p in layer.parameters(recurse=False)}
        outside = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
        if outside:
            raise ValueError(f"book-keeping clipping covers nn.Embedding and nn.Linear only; trainable "
                             f"parameters elsewhere: {outside}")
        for layer in self.layers:
            if isinstance(layer, nn.Embedding) and (layer.max_norm is not None or layer.sparse
                                                     or layer.padding_idx is not None):
                raise ValueError("book-keeping clipping needs a plain nn.Embedding (no max_norm, not sparse, "
                                 "no padding_idx)")
        self._saved: list[tuple[Layer, torch.Tensor, torch.Tensor]] = []
        self._recording = False  # forwards outside a step (scoring, evaluation) keep nothing
        self._hooks = [layer.register_forward_hook(self._keep) for layer in self.layers]

    def _keep(self, layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self._recording:
            self._saved.append((layer, inputs[0].detach(), output))  # type: ignore[arg-type]

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def __enter__(self) -> BookkeepingStep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def gradients(self, positives: torch.Tensor, negatives: torch.Tensor, divisor: float) -> torch.Tensor:
        """Set each trainable parameter's ``.grad`` for the examples ``positives (b,)``,
        ``negatives (b, k)``; returns the ``(b,)`` per-record losses (detached)."""
        if not divisor > 0:
            raise ValueError(f"divisor must be > 0, got {divisor}")
        self._saved = []
        noised = self._noise()
        losses = torch.zeros(0)
        if len(positives):
            users, items = record_examples(positives, negatives)
            self._recording = True
            try:
                losses = record_losses(self.model(users, items), self.loss)
            finally:
                self._recording = False
            saved, self._saved = self._saved, []
            layers = [layer for layer, _, _ in saved]
            if len({id(layer) for layer in layers}) != len(layers):
                raise ValueError("a layer ran twice in one forward (shared weights): its per-example "
                                 "norm needs cross terms book-keeping clipping does not form")
            output_grads = torch.autograd.grad(losses.sum(), [output for _, _, output in saved], allow_unused=True)
            # a layer whose output the loss did not use has zero gradients: nothing to clip or add
            terms = [_per_example(layer, inputs, g.detach(), len(losses))
                     for (layer, inputs, _), g in zip(saved, output_grads) if g is not None]
            factors = self._clip_factors(terms, len(losses))
            with torch.no_grad():
                for term in terms:
                    _add_clipped(*term, factors, noised)
        for p in self.params:
            p.grad = noised[p].to(p.dtype).div_(divisor)
        return losses.detach()

    def _noise(self) -> dict[torch.Tensor, torch.Tensor]:
        """``N(0, σ²C²)`` in float64 over every trainable coordinate, one draw, in parameter order."""
        total = sum(p.numel() for p in self.params)
        std = self.noise_multiplier * self.clip
        flat = (self.rng.normal_tensor(total, std) if std > 0 else torch.zeros(total, dtype=torch.float64))
        if self.params:
            flat = flat.to(self.params[0].device)
        out, offset = {}, 0
        for p in self.params:
            out[p] = flat[offset:offset + p.numel()].view(p.shape)
            offset += p.numel()
        return out

    def _clip_factors(self, terms: Sequence[Term], n: int) -> torch.Tensor:
        """``c_i = min(1, C / N_i)`` from each layer's per-example squared norm."""
        squared = torch.zeros(n, dtype=torch.float64)
        for term in terms:
            squared += _squared_norms(*term)
        return (self.clip / squared.sqrt().clamp(min=1e-300)).clamp(max=1.0)


def _per_example(layer: Layer, inputs: torch.Tensor, g: torch.Tensor, n: int) -> Term:
    """``(layer, rows, grads)``: each example's ``L`` inputs — lookups ``(n, L)`` of an
    embedding, float64 activations ``(n, L, in)`` of a linear layer — and output gradients
    ``(n, L, out)`` in float64. A layer run on rows not one entry per example is refused."""
    if inputs.shape[0] != n or g.shape[0] != n:
        raise ValueError(f"{type(layer).__name__} ran on a tensor of leading size {inputs.shape[0]}, not one "
                         f"entry per example ({n}): its per-example gradients cannot be read from it")
    grads = g.reshape(n, -1, g.shape[-1]).to(torch.float64)
    if isinstance(layer, nn.Embedding):
        return layer, inputs.reshape(n, -1), grads
    return layer, inputs.reshape(n, -1, inputs.shape[-1]).to(torch.float64), grads


def _squared_norms(layer: Layer, rows: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """``‖∇ℓ_i‖²`` over ``layer``'s trainable parameters (the module docstring's Gram forms)."""
    if isinstance(layer, nn.Embedding):
        return lookup_norm_sample(layer, [rows], grads)[layer.weight].pow(2)
    squared = torch.zeros(len(grads), dtype=torch.float64)
    if layer.weight.requires_grad:
        gram_g = torch.bmm(grads, grads.transpose(1, 2))
        squared += (torch.bmm(rows, rows.transpose(1, 2)) * gram_g).sum(dim=(1, 2))
    if layer.bias is not None and layer.bias.requires_grad:
        squared += grads.sum(dim=1).pow(2).sum(dim=1)
    return squared


def _add_clipped(layer: Layer, rows: torch.Tensor, grads: torch.Tensor, factors: torch.Tensor,
                 into: dict[torch.Tensor, torch.Tensor]) -> None:
    """Add ``Σ_i c_i ∇ℓ_i`` of ``layer``'s trainable parameters to ``into``."""
    flat = (grads * factors[:, None, None]).reshape(-1, grads.shape[-1])
    if isinstance(layer, nn.Embedding):
        into[layer.weight].index_add_(0, rows.reshape(-1), flat)
        return
    if layer.weight.requires_grad:
        into[layer.weight].add_(flat.T @ rows.reshape(-1, rows.shape[-1]))
    if layer.bias is not None and layer.bias.requires_grad:
        into[layer.bias].add_(flat.sum(dim=0))
