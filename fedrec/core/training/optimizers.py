"""The client optimisers every training path accepts, built by name."""

from __future__ import annotations

from typing import Iterable

import torch

OPTIMIZERS = ("sgd", "adam")


def check_optimizer(name: str) -> str:
    """``name`` if it is one of :data:`OPTIMIZERS`, else ``ValueError`` naming the choices."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose one of {OPTIMIZERS}")
    return name


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` or ``torch.optim.Adam`` over ``params`` with learning rate ``lr``."""
    check_optimizer(name)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
