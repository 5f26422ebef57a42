"""Biased matrix factorisation for explicit ratings (Koren, Bell & Volinsky 2009, eq. 4).

``r̂(u, i) = μ + b_u + b_i + <p_u, q_i>``, in rating units (stars), trained by
regression with the regularised squared error of Koren et al. (eq. 5),
``(r̂ − r)² + λ (b_u² + b_i² + ‖p_u‖² + ‖q_i‖²)`` per rating
(:mod:`fedrec.core.training.ratings`), not by the implicit-feedback losses of
:mod:`fedrec.core.training.implicit`. The penalty touches only the rows of the rating's user
and item, so a user's update of the item tables stays row-sparse (unlike weight
decay, which moves every row).

* global: the mean ``μ`` (a scalar), item biases ``b_i`` and item embeddings ``q_i``;
* local: the user vector ``p_u`` and the user bias ``b_u`` — both describe one user.

``μ`` starts at 0 here; a run should start it at the mean training rating (or the
middle of the scale): :func:`fedrec.core.training.ratings.initial_rating_arrays`.
A fresh user (:meth:`reset_local_parameters`) gets a random ``p_u`` and ``b_u = 0``:
it is predicted as the average user until it trains.
"""

from __future__ import annotations

import torch
from torch import nn

from fedrec.core.models.base import EMBEDDING_INIT_STD, Recommender, init_embedding

GLOBAL_MEAN = "global_mean"
USER_BIAS = "user_bias.weight"


class ExplicitMF(Recommender):
    global_parameter_names = (GLOBAL_MEAN, "item_bias.weight", "item_embedding.weight")
    local_parameter_names = ("user_embedding.weight", USER_BIAS)
    item_table_names = ("item_bias.weight", "item_embedding.weight")

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__(n_users, n_items, dim)
        self.global_mean = nn.Parameter(torch.zeros(1))
        self.user_embedding = nn.Embedding(n_users, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_embedding = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        init_embedding(self.user_embedding)
        init_embedding(self.item_embedding)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        self.check_split()

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted ratings ``(b,)`` for pairs ``(users[j], items[j])``."""
        interaction = (self.user_embedding(users) * self.item_embedding(items)).sum(-1)
        biases = self.user_bias(users).squeeze(-1) + self.item_bias(items).squeeze(-1)
        return self.global_mean + biases + interaction

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        p, q = self.user_embedding(users), self.item_embedding(items)
        biases = self.user_bias(users) + self.item_bias(items).squeeze(-1)[None, :]  # (b, m)
        return self.global_mean + biases + p @ q.T

    def penalty(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(b,)`` per-rating penalty ``b_u² + b_i² + ‖p_u‖² + ‖q_i‖²`` (λ is the caller's)."""
        squares = (self.user_embedding(users) ** 2).sum(-1) + (self.item_embedding(items) ** 2).sum(-1)
        return squares + self.user_bias(users).squeeze(-1) ** 2 + self.item_bias(items).squeeze(-1) ** 2

    def reset_local_parameters(self, generator: torch.Generator) -> None:
        """A fresh user: ``p_u ~ N(0, EMBEDDING_INIT_STD²)`` and ``b_u = 0``."""
        with torch.no_grad():
            weight = self.user_embedding.weight
            weight.copy_(torch.randn(weight.shape, generator=generator) * EMBEDDING_INIT_STD)
            self.user_bias.weight.zero_()
