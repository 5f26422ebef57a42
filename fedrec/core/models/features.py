"""The shared part of feature models: a fixed item-feature buffer and its projection ``W``.

A feature model holds the public catalogue metadata ``F (n_items, n_features)`` as a
**non-trainable, non-persistent buffer** given at construction: it is neither a
global nor a local parameter, never shipped, averaged or noised, and not part of the
``state_dict`` (whoever builds the model passes the same public matrix). The trainable
projection ``W (dim, n_features)`` maps an item's features into the embedding space,
``W f_i``, and is global.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fedrec.core.models.base import EMBEDDING_INIT_STD, Recommender

PROJECTION = "feature_projection.weight"


def feature_matrix(item_features: torch.Tensor | NDArray[np.floating], n_items: int) -> torch.Tensor:
    """Check and copy an ``(n_items, F)`` feature matrix into a float32 tensor."""
    values = torch.as_tensor(np.asarray(item_features, dtype=np.float32)).clone()
    if values.ndim != 2 or values.shape[0] != n_items or values.shape[1] < 1:
        raise ValueError(
            f"item features must be a (n_items, F) matrix with n_items={n_items} and F ≥ 1, "
            f"got shape {tuple(values.shape)}"
        )
    if not torch.isfinite(values).all():
        raise ValueError("item features contain NaN or infinite values")
    return values


class FeatureRecommender(Recommender):
    """A recommender that also sees item features ``f_i`` through a global projection ``W``.

    ``W`` starts from ``N(0, σ²/F)`` with ``σ = EMBEDDING_INIT_STD``, so that for
    features in ``[0, 1]`` the projected ``W f_i`` has the scale of an embedding row.
    """

    needs_item_features: ClassVar[bool] = True
    # Buffers indexed by item, like the item tables but public and never trained: an
    # executor that cuts the item tables to a user's rows and renumbers the items
    # (the cohort's compact path) must cut these the same way.
    item_buffer_names: ClassVar[tuple[str, ...]] = ("item_features",)

    def __init__(
        self, n_users: int, n_items: int, dim: int, item_features: torch.Tensor | NDArray[np.floating]
    ) -> None:
        super().__init__(n_users, n_items, dim)
        values = feature_matrix(item_features, n_items)
        self.n_features = values.shape[1]
        self.register_buffer("item_features", values, persistent=False)
        self.feature_projection = nn.Linear(self.n_features, dim, bias=False)
        nn.init.normal_(self.feature_projection.weight, std=EMBEDDING_INIT_STD / math.sqrt(self.n_features))

    def project_features(self, items: torch.Tensor) -> torch.Tensor:
        """``W f_i`` for every item of ``items (m,)``: ``(m, dim)``."""
        return self.feature_projection(self.item_features[items])
