"""Content-based ranking with a private user profile: ``s(u, i) = <p_u, W f_i> + b_i``.

The item side is only the item's public features ``f_i (F,)`` projected by ``W (d, F)``;
the user side is a profile ``p_u (d,)`` in the projected space, so
``<p_u, W f_i> = <W^T p_u, f_i>``: ``W^T p_u`` is the user's taste for each feature.

* ``p_u`` — **local**, never sent;
* ``W`` and the item bias ``b_i`` (popularity) — **global**; ``b`` is the only item table,
  so the model learns no per-item vector at all and a new item is scored as soon as its
  features are known.

How the profile is built (on the user's device, from its own items only): ``p_u`` is a
learned local parameter, fitted by the same loss and code path as any user vector
(:func:`fedrec.core.training.implicit.reconstruct_local` with ``W`` frozen, then the local round).
Its starting point may be the Rocchio-style centroid of the user's training items in
the projected space, :func:`profile_from_items`,
``p_u⁰ = (1/|I_u|) Σ_{i ∈ I_u} W f_i``, which already ranks items by their projected
similarity to what the user consumed; a client that does not call it starts from the
usual seeded random vector.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fedrec.core.models.base import init_embedding
from fedrec.core.models.features import PROJECTION, FeatureRecommender


class ContentRanker(FeatureRecommender):
    global_parameter_names = (PROJECTION, "item_bias.weight")
    local_parameter_names = ("user_embedding.weight",)
    item_side_names = (PROJECTION,)  # maps item features: item side, not a score head
    item_table_names = ("item_bias.weight",)

    def __init__(
        self, n_users: int, n_items: int, dim: int, item_features: torch.Tensor | NDArray[np.floating]
    ) -> None:
        super().__init__(n_users, n_items, dim, item_features)
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        init_embedding(self.user_embedding)
        nn.init.zeros_(self.item_bias.weight)
        self.check_split()

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        p = self.user_embedding(users)
        return (p * self.project_features(items)).sum(-1) + self.item_bias(items).squeeze(-1)

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        p = self.user_embedding(users)
        return p @ self.project_features(items).T + self.item_bias(items).squeeze(-1)[None, :]


@torch.no_grad()
def profile_from_items(model: ContentRanker, items: NDArray[np.int64]) -> torch.Tensor:
    """The centroid ``(1/|I_u|) Σ_{i ∈ I_u} W f_i`` of ``items`` in the projected space: ``(d,)``."""
    if len(items) == 0:
        raise ValueError("a profile needs at least one of the user's items; this user has none")
    index = torch.as_tensor(np.asarray(items, dtype=np.int64))
    if index.min() < 0 or index.max() >= model.n_items:
        raise ValueError(f"item ids must lie in 0..{model.n_items - 1}")
    return model.project_features(index).mean(0)


@torch.no_grad()
def init_profile(model: ContentRanker, user: int, items: NDArray[np.int64]) -> None:
    """Set user ``user``'s profile to :func:`profile_from_items` of its own ``items``."""
    if not 0 <= user < model.n_users:
        raise ValueError(f"user {user} outside 0..{model.n_users - 1}")
    model.user_embedding.weight[user] = profile_from_items(model, items)
