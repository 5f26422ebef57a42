"""BPR-MF: matrix factorisation trained with Bayesian Personalised Ranking
(Rendle, Freudenthaler, Gantner & Schmidt-Thieme, UAI 2009).

The model is :class:`fedrec.core.models.mf.MF`, s(u, i) = p_u·q_i + b_i, with user
vectors p (n_users, d), item vectors q (n_items, d) and item biases b (n_items,).
Each epoch pairs every training positive (u, i) with one item j drawn uniformly
among the items u has not trained on, shuffles the triples, and minimises per
batch B of triples

    L = (1/|B|) Σ_{(u,i,j) ∈ B} [ −ln σ(s(u,i) − s(u,j))
                                   + λ (‖p_u‖² + ‖q_i‖² + ‖q_j‖² + b_i² + b_j²) ]

with Adam or plain SGD (λ = ``reg``: the L2 penalty falls only on the rows a
triple touches, as in the paper's LearnBPR). Sampling and initialisation are
seeded, so a fit is reproducible for a given seed and thread count.

The tensors are small (a batch of 1024 triples, d = 64), so torch's intra-op
threads buy little and cost much on a busy machine: on ML-100K, 20 epochs took
about 11 s with ``torch.set_num_threads(1)`` and several times that with 2 threads
on 2 shared cores. The caller chooses; this module leaves torch's settings alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional as F

from fedrec.core.baselines.scorer import check_users
from fedrec.core.data.split import LeaveOneOutSplit
from fedrec.core.models.mf import MF
from fedrec.core.models.registry import build_model
from fedrec.core.training.implicit import epoch_plan, positives_key, score_all_items
from fedrec.core.training.optimizers import build_optimizer, check_optimizer


@dataclass(frozen=True)
class BPRConfig:
    """Hyper-parameters of BPR-MF, validated on construction.

    Attributes:
        dim: embedding size d.
        epochs: passes over the training positives (one sampled negative each).
        lr: learning rate of the optimizer.
        batch_size: triples per gradient step.
        reg: L2 weight λ on the rows each triple touches.
        optimizer: "adam" or "sgd".
        seed: seeds the initialisation and the negative sampling.
    """

    dim: int = 64
    epochs: int = 20
    lr: float = 0.005
    batch_size: int = 1024
    reg: float = 1e-4
    optimizer: str = "adam"
    seed: int = 0

    def __post_init__(self) -> None:
        check_optimizer(self.optimizer)
        if self.dim < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"dim, epochs and batch_size must be ≥ 1, got {self.dim}, {self.epochs}, {self.batch_size}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.reg >= 0:
            raise ValueError(f"reg must be ≥ 0, got {self.reg}")


def bpr_loss(model: MF, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, reg: float) -> torch.Tensor:
    """Mean over the batch of −ln σ(s_ui − s_uj) + λ(‖p_u‖² + ‖q_i‖² + ‖q_j‖² + b_i² + b_j²); all ``(b,)``."""
    p = model.user_embedding(users)
    q_i, q_j = model.item_embedding(positives), model.item_embedding(negatives)
    b_i, b_j = model.item_bias(positives).squeeze(-1), model.item_bias(negatives).squeeze(-1)
    margin = (p * (q_i - q_j)).sum(-1) + b_i - b_j
    penalty = p.pow(2).sum(-1) + q_i.pow(2).sum(-1) + q_j.pow(2).sum(-1) + b_i.pow(2) + b_j.pow(2)
    return (-F.logsigmoid(margin) + reg * penalty).mean()


class BPR:
    """BPR-MF scorer: s(u, i) = p_u·q_i + b_i after :meth:`fit`. ``epoch_losses`` holds the mean L per epoch."""

    def __init__(self, config: BPRConfig | None = None) -> None:
        self.config = BPRConfig() if config is None else config
        self.model: MF | None = None
        self.epoch_losses: list[float] = []

    def fit(self, split: LeaveOneOutSplit) -> BPR:
        cfg = self.config
        model = build_model("mf", split.n_users, split.n_items, cfg.dim, seed=cfg.seed)
        assert isinstance(model, MF)
        params = list(model.parameters())
        optimizer = build_optimizer(cfg.optimizer, params, cfg.lr)
        rng = np.random.default_rng([cfg.seed, 2009])
        users = split.train_users()
        items = split.train_items
        key = positives_key(users, items, split.n_items)
        self.epoch_losses = []
        model.train()
        for _ in range(cfg.epochs):
            u, i, j = epoch_plan(users, items, key, split.n_items, 1, rng)
            u_t, i_t, j_t = torch.from_numpy(u), torch.from_numpy(i), torch.from_numpy(j[:, 0].copy())
            total = 0.0
            for start in range(0, len(u), cfg.batch_size):
                batch = slice(start, start + cfg.batch_size)
                optimizer.zero_grad(set_to_none=True)
                loss = bpr_loss(model, u_t[batch], i_t[batch], j_t[batch], cfg.reg)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(u_t[batch])
            self.epoch_losses.append(total / max(len(u), 1))
        self.model = model
        return self

    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        if self.model is None:
            raise RuntimeError("BPR is not fitted: call fit(split) first")
        users = check_users(users, self.model.n_users)
        return score_all_items(self.model, users).astype(np.float32, copy=False)
