"""Matrix factorisation with an item bias: ``s(u, i) = <p_u, q_i> + b_i``.

Global: item embeddings ``q`` (n_items, d) and item biases ``b`` (n_items,).
Local: the user embedding ``p`` (n_users, d).
"""

from __future__ import annotations

import torch
from torch import nn

from fedrec.core.models.base import Recommender, init_embedding


class MF(Recommender):
    global_parameter_names = ("item_embedding.weight", "item_bias.weight")
    local_parameter_names = ("user_embedding.weight",)
    item_table_names = ("item_embedding.weight", "item_bias.weight")

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__(n_users, n_items, dim)
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        init_embedding(self.user_embedding)
        init_embedding(self.item_embedding)
        nn.init.zeros_(self.item_bias.weight)
        self.check_split()

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        p = self.user_embedding(users)
        q = self.item_embedding(items)
        return (p * q).sum(-1) + self.item_bias(items).squeeze(-1)

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        p = self.user_embedding(users)
        q = self.item_embedding(items)
        return p @ q.T + self.item_bias(items).squeeze(-1)[None, :]
