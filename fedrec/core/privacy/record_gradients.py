"""Every record's gradient at once, split into its shared and local parts, each clipped.

A *record* is one training positive ``i`` of a user ``u``; its *example* is ``i`` with
``k`` negatives ``j₁..j_k`` drawn uniformly from the catalogue (independent of the data,
as in :func:`fedrec.core.privacy.record_level.draw_negatives`), and its loss ``ℓ_r`` is
:func:`~fedrec.core.privacy.record_level.record_losses` of its ``1 + k`` scores.

The gradient of ``ℓ_r`` touches

* the **local** parameters of its user (``θ_u``: the user vectors, a local head), and
* the **shared** parameters: the rows ``i, j₁..j_k`` of every item table and every dense
  global layer.

Both are computed for a whole chunk of examples in one pass: each example gets its own
copy of its user's local parameters and of its ``1 + k`` item rows (its items renumbered
``0..k``), the dense layers are shared, and ``vmap(grad(ℓ))`` over ``functional_call`` of
the registered model returns one gradient per example. No ``(examples, n_items, d)``
tensor is built: an item table's per-example gradient is its ``(1 + k, w)`` gathered rows.

Norms. The gathered rows of one example may repeat an item (a negative equal to the
positive, or to another negative): the table's true gradient adds those rows, so its
squared Frobenius norm is ``Σ_{t,s} [r_t = r_s] ⟨g_t, g_s⟩`` over the example's
lookups (the Gram-matrix form), not ``Σ_t ‖g_t‖²``. The shared norm adds every table's
and every dense layer's; the local norm is that of the local part.

Clipping. The two parts are clipped **separately**, each to ``C``:
``ḡ = g · min(1, C/‖g‖)``. The shared part is what leaves the device (through secure
aggregation, :mod:`fedrec.core.privacy.record_distributed`); the local part stays on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import functional_call, grad, vmap

from fedrec.core.arrays import Tensors
from fedrec.core.models.base import Recommender
from fedrec.core.privacy.record_level import record_losses


@dataclass(frozen=True)
class ExampleChunk:
    """A chunk of examples: ``owners (E,)`` indexes the stacked local parameters (the
    example's user), ``items (E, 1 + k)`` its positive (column 0) and negatives."""

    owners: torch.Tensor
    items: torch.Tensor

    def __post_init__(self) -> None:
        if self.owners.dim() != 1 or self.items.dim() != 2 or len(self.owners) != len(self.items):
            raise ValueError(f"owners must be (E,) and items (E, 1+k), got {tuple(self.owners.shape)} and "
                             f"{tuple(self.items.shape)}")
        if self.items.shape[1] < 2:
            raise ValueError("an example needs its positive and at least one negative")


@dataclass
class RecordGradients:
    """Per-example gradients of a chunk: ``local[name] (E, *shape)``; ``rows[name]
    (E, 1 + k, *row_shape)`` for every item table; ``dense[name] (E, *shape)``."""

    local: Tensors
    rows: Tensors
    dense: Tensors

    def scaled(self, local_factor: torch.Tensor, shared_factor: torch.Tensor) -> RecordGradients:
        """Every example's local part times ``local_factor (E,)``, shared part times ``shared_factor (E,)``."""
        return RecordGradients({k: _times(v, local_factor) for k, v in self.local.items()},
                               {k: _times(v, shared_factor) for k, v in self.rows.items()},
                               {k: _times(v, shared_factor) for k, v in self.dense.items()})


def _times(value: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return value * factor.view(-1, *([1] * (value.dim() - 1)))


def example_loss(model: Recommender, loss: str) -> Callable[..., torch.Tensor]:
    """``ℓ(local, rows, dense, buffers)`` of one example whose items are renumbered ``0..k``."""

    def one(local: Tensors, rows: Tensors, dense: Tensors, buffers: Tensors) -> torch.Tensor:
        width = next(iter(rows.values())).shape[0]
        items = torch.arange(width, device=next(iter(rows.values())).device)
        params = {**local, **rows, **dense, **buffers}
        scores = functional_call(model, params, (torch.zeros_like(items), items))
        return record_losses(scores[None, :], loss)[0]

    return one


def per_example_gradients(model: Recommender, local: Tensors, shared: Tensors, chunk: ExampleChunk,
                          loss: str, buffers: Tensors | None = None) -> RecordGradients:
    """Each example's gradient of its own loss, at the given parameters.

    ``local[name] (U, *shape)``: the stacked local parameters of the chunk's users (a user
    table's row is ``(1, d)``: one user per client model); ``shared[name]``: the global
    arrays as tensors; ``buffers``: the model's item-indexed buffers, whole.
    """
    tables = set(model.item_table_names)
    rows = {name: value[chunk.items] for name, value in shared.items() if name in tables}
    dense = {name: value for name, value in shared.items() if name not in tables}
    own = {name: value[chunk.owners] for name, value in local.items()}
    cut = {name: value[chunk.items] for name, value in (buffers or {}).items()}
    gradient = vmap(grad(example_loss(model, loss), argnums=(0, 1, 2)), in_dims=(0, 0, None, 0))
    local_grads, row_grads, dense_grads = gradient(own, rows, dense, cut)
    return RecordGradients(local_grads, row_grads, dense_grads)


def shared_norms(grads: RecordGradients, items: torch.Tensor) -> torch.Tensor:
    """``(E,)`` L2 norm of each example's shared gradient (repeated items summed, see the module)."""
    squared = torch.zeros(len(items), dtype=torch.float64, device=items.device)
    same = (items[:, :, None] == items[:, None, :]).to(torch.float64)
    for value in grads.rows.values():
        flat = value.reshape(value.shape[0], value.shape[1], -1).to(torch.float64)
        squared += (torch.bmm(flat, flat.transpose(1, 2)) * same).sum(dim=(1, 2))
    for value in grads.dense.values():
        squared += value.reshape(len(value), -1).to(torch.float64).pow(2).sum(dim=1)
    return squared.clamp(min=0).sqrt()


def local_norms(grads: RecordGradients) -> torch.Tensor:
    """``(E,)`` L2 norm of each example's local gradient."""
    squared = sum(value.reshape(len(value), -1).to(torch.float64).pow(2).sum(dim=1)
                  for value in grads.local.values())
    return torch.as_tensor(squared).clamp(min=0).sqrt()


def clip_factors(norms: torch.Tensor, clip: float) -> torch.Tensor:
    """``min(1, C/‖g‖)`` per example (1 for a zero gradient)."""
    if not clip > 0:
        raise ValueError(f"clip C must be > 0, got {clip}")
    return torch.clamp(clip / norms.clamp(min=1e-300), max=1.0)


def clipped_gradients(model: Recommender, local: Tensors, shared: Tensors, chunk: ExampleChunk, loss: str,
                      clip: float, buffers: Tensors | None = None) -> RecordGradients:
    """:func:`per_example_gradients` with the local and shared parts each clipped to ``clip``."""
    grads = per_example_gradients(model, local, shared, chunk, loss, buffers)
    local_factor = clip_factors(local_norms(grads), clip).to(torch.float32)
    shared_factor = clip_factors(shared_norms(grads, chunk.items), clip).to(torch.float32)
    return grads.scaled(local_factor, shared_factor)
