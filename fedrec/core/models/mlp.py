"""The NCF multi-layer perceptron (He et al. 2017, eq. 10).

``s(u, i) = h^T φ_L(… φ_1([p_u; q_i]))`` with ReLU layers halving the width:
``2d → d → d/2``. Global: item embeddings, every hidden layer and the output layer.
Local: the user embedding ``p``.
"""

from __future__ import annotations

import torch
from torch import nn

from fedrec.core.models.base import Recommender, init_embedding


def tower_widths(dim: int) -> list[int]:
    """Widths of the MLP tower for embedding size ``dim``: [2d, d, d/2] (at least 1)."""
    return [2 * dim, dim, max(dim // 2, 1)]


def build_tower(dim: int) -> nn.Sequential:
    widths = tower_widths(dim)
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        linear = nn.Linear(fan_in, fan_out)
        nn.init.zeros_(linear.bias)  # random biases can switch every ReLU off at the start
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers)


def tower_parameter_names(prefix: str, dim: int) -> tuple[str, ...]:
    """Names of the tower's parameters (Linear layers sit at even indices)."""
    n_linear = len(tower_widths(dim)) - 1
    return tuple(f"{prefix}.{2 * k}.{p}" for k in range(n_linear) for p in ("weight", "bias"))


class MLP(Recommender):
    local_parameter_names = ("user_embedding.weight",)
    item_table_names = ("item_embedding.weight",)

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__(n_users, n_items, dim)
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        self.tower = build_tower(dim)
        self.output = nn.Linear(tower_widths(dim)[-1], 1)
        init_embedding(self.user_embedding)
        init_embedding(self.item_embedding)
        self.global_parameter_names = (
            "item_embedding.weight",
            *tower_parameter_names("tower", dim),
            "output.weight",
            "output.bias",
        )
        self.check_split()

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.user_embedding(users), self.item_embedding(items)], dim=-1)
        return self.output(self.tower(x)).squeeze(-1)
