"""The local-training section of the run config: the client's loss, optimiser and batches.

:class:`TrainingConfig` holds the hyper-parameters every local training path reads
(:mod:`fedrec.core.training.implicit` and the other families' training, the central twin)
and checks them once, when it is built.
:class:`~fedrec.core.config.run_config.RunConfig` builds it from its flat fields
(``config.training``; ``client-optimizer`` is its ``optimizer``). It imports no torch, so
building a run config does not load it; :mod:`fedrec.core.training.implicit` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedrec.core.config.choices import LOSSES, check_optimizer


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of local training, validated once at the edge."""

    lr: float = 0.01
    batch_size: int = 64
    negatives: int = 4
    loss: str = "bce"
    optimizer: str = "adam"
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}: choose one of {LOSSES}")
        check_optimizer(self.optimizer)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1 or self.negatives < 1:
            raise ValueError("batch_size and negatives must be ≥ 1")
        if self.weight_decay < 0:
            raise ValueError("weight_decay must be ≥ 0")
