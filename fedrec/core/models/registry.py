"""The model registry: recommenders picked by name (``--model neumf``)."""

from __future__ import annotations

import torch

from fedrec.core.models.base import Recommender
from fedrec.core.models.gmf import GMF
from fedrec.core.models.mf import MF
from fedrec.core.models.mlp import MLP
from fedrec.core.models.neumf import NeuMF

MODELS: dict[str, type[Recommender]] = {"mf": MF, "gmf": GMF, "mlp": MLP, "neumf": NeuMF}


def build_model(name: str, n_users: int, n_items: int, dim: int, seed: int = 0) -> Recommender:
    """Build a registered model with parameters drawn from a seeded generator."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {sorted(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](n_users, n_items, dim)
