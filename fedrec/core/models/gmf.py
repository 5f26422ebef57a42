"""Generalised matrix factorisation (NCF paper, He et al. 2017, eq. 9).

``s(u, i) = h^T (p_u ⊙ q_i) + c``. Global: item embeddings ``q`` and the output
layer ``(h, c)``. Local: the user embedding ``p``.
"""

from __future__ import annotations

import torch
from torch import nn

from fedrec.core.models.base import Recommender, init_embedding


class GMF(Recommender):
    global_parameter_names = ("item_embedding.weight", "output.weight", "output.bias")
    local_parameter_names = ("user_embedding.weight",)
    item_table_names = ("item_embedding.weight",)

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__(n_users, n_items, dim)
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        self.output = nn.Linear(dim, 1)
        init_embedding(self.user_embedding)
        init_embedding(self.item_embedding)
        nn.init.ones_(self.output.weight)  # starts as a plain dot product
        nn.init.zeros_(self.output.bias)
        self.check_split()

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.output(self.user_embedding(users) * self.item_embedding(items)).squeeze(-1)

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        p = self.user_embedding(users) * self.output.weight  # (b, d), h folded into p
        return p @ self.item_embedding(items).T + self.output.bias
