"""Hybrid matrix factorisation: a collaborative item embedding plus projected item features.

``s(u, i) = <p_u, q_i + W f_i> + b_i`` (the item side of LightFM, Kula 2015, and
SVDFeature, Chen et al. 2012, with one projection ``W`` over the feature vector).

* ``p_u (d,)`` user vector — **local**;
* ``q_i (d,)`` item embedding, ``b_i`` item bias — **global**, item tables;
* ``W (d, F)`` feature projection — **global**, dense;
* ``f_i (F,)`` the item's public features — a fixed buffer, not a parameter.

``q_i`` starts at 0, so an item is first represented by its features alone and ``q_i``
learns what the features do not explain. An item that nobody trained on keeps
``q_i = 0, b_i = 0`` and is scored by the feature path ``<p_u, W f_i>``: it ranks with
the items it resembles, which plain MF (a random ``q_i``) cannot do.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fedrec.core.models.base import init_embedding
from fedrec.core.models.features import PROJECTION, FeatureRecommender


class Hybrid(FeatureRecommender):
    global_parameter_names = ("item_embedding.weight", PROJECTION, "item_bias.weight")
    local_parameter_names = ("user_embedding.weight",)
    item_side_names = (PROJECTION,)  # maps item features: item side, not a score head
    item_table_names = ("item_embedding.weight", "item_bias.weight")

    def __init__(
        self, n_users: int, n_items: int, dim: int, item_features: torch.Tensor | NDArray[np.floating]
    ) -> None:
        super().__init__(n_users, n_items, dim, item_features)
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        init_embedding(self.user_embedding)
        nn.init.zeros_(self.item_embedding.weight)
        nn.init.zeros_(self.item_bias.weight)
        self.check_split()

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """``q_i + W f_i`` for every item of ``items (m,)``: ``(m, d)``."""
        return self.item_embedding(items) + self.project_features(items)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        p = self.user_embedding(users)
        return (p * self.item_vectors(items)).sum(-1) + self.item_bias(items).squeeze(-1)

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        p = self.user_embedding(users)
        return p @ self.item_vectors(items).T + self.item_bias(items).squeeze(-1)[None, :]
