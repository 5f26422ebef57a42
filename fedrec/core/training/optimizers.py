"""The client optimisers every training path accepts, built by name."""

from __future__ import annotations

from typing import Iterable

import torch

# the names and their check are defined, torch-free, with the run config; re-exported here
from fedrec.core.config.choices import OPTIMIZERS as OPTIMIZERS
from fedrec.core.config.choices import check_optimizer


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` or ``torch.optim.Adam`` over ``params`` with learning rate ``lr``."""
    check_optimizer(name)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
