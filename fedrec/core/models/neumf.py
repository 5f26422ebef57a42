"""NeuMF: GMF and MLP fused by a final layer (He et al. 2017, eq. 11–12).

``s(u, i) = h^T [p^G_u ⊙ q^G_i ; φ_MLP([p^M_u; q^M_i])]`` with separate embeddings for
the two branches. Global: both item embeddings, the MLP tower and the fused output
layer. Local: the two user embeddings ``p^G`` and ``p^M``.
"""

from __future__ import annotations

import torch
from torch import nn

from fedrec.core.models.base import Recommender, init_embedding
from fedrec.core.models.mlp import build_tower, tower_parameter_names, tower_widths


class NeuMF(Recommender):
    local_parameter_names = ("gmf_user_embedding.weight", "mlp_user_embedding.weight")
    item_table_names = ("gmf_item_embedding.weight", "mlp_item_embedding.weight")

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__(n_users, n_items, dim)
        self.gmf_user_embedding = nn.Embedding(n_users, dim)
        self.gmf_item_embedding = nn.Embedding(n_items, dim)
        self.mlp_user_embedding = nn.Embedding(n_users, dim)
        self.mlp_item_embedding = nn.Embedding(n_items, dim)
        self.tower = build_tower(dim)
        self.output = nn.Linear(dim + tower_widths(dim)[-1], 1)
        for table in (
            self.gmf_user_embedding,
            self.gmf_item_embedding,
            self.mlp_user_embedding,
            self.mlp_item_embedding,
        ):
            init_embedding(table)
        self.global_parameter_names = (
            "gmf_item_embedding.weight",
            "mlp_item_embedding.weight",
            *tower_parameter_names("tower", dim),
            "output.weight",
            "output.bias",
        )
        self.check_split()

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        gmf = self.gmf_user_embedding(users) * self.gmf_item_embedding(items)
        mlp_in = torch.cat([self.mlp_user_embedding(users), self.mlp_item_embedding(items)], dim=-1)
        return self.output(torch.cat([gmf, self.tower(mlp_in)], dim=-1)).squeeze(-1)
