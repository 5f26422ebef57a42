"""The central twin: the same model, split, loss and evaluation, trained in one place.

Central training sees every user's interactions at once and runs plain minibatch
training over all of them per epoch (no Flower). It is the reference every
federated number is compared with ("federated reaches x% of central").
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import numpy as np
import torch

from fedrec.core.data.item_features import ItemFeatures, dataset_item_features
from fedrec.core.data.split import LeaveOneOutSplit
from fedrec.core.evaluation.protocols import evaluate_user, mean_metrics
from fedrec.core.models.base import Recommender
from fedrec.core.models.registry import build_model, needs_item_features
from fedrec.core.training.implicit import (
    NEGATIVE_POOLS,
    TrainingConfig,
    make_optimizer,
    positives_key,
    score_all_items,
    train_epoch,
)

EVAL_BATCH_USERS = 256


@dataclass(frozen=True)
class CentralConfig:
    """The central twin's settings: the data, the model, its training and its evaluation.

    One config for both :func:`train_central` (given a split) and
    :func:`fedrec.simulations.central_twin.run_central` / ``fedrec train-central`` (which
    load ``dataset`` and split it with ``seed`` and ``eval_negatives``). ``dataset`` and
    ``data_dir`` name the data the split was made from; a feature model (``hybrid``,
    ``content``) reads its item features there
    (:func:`~fedrec.core.data.item_features.dataset_item_features` with ``seed``), as the
    federated run does. ``""`` means unnamed: :func:`train_central` then refuses a feature
    model and ``run_central`` refuses to run. ``k`` is the length of the evaluated top-K
    list; ``training`` the optimiser and loss settings, a section like
    :attr:`fedrec.core.config.run_config.RunConfig.training` (Adam, lr 0.001, batch 256 by
    default).
    """

    dataset: str = ""
    data_dir: str = ""
    model: str = "mf"
    dim: int = 32
    epochs: int = 20
    seed: int = 0
    eval_every: int = 5
    k: int = 10
    eval_negatives: int = 99
    validation: bool = False  # also rank each user's validation item (val_hr@K, for picking the best epoch)
    # where negatives come from (fedrec.core.training.implicit.negative_key): unseen-all never draws
    # a user's held-out validation/test items, as the federated runs with the same setting
    train_negatives: str = "unseen-train"
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(lr=0.001, batch_size=256))

    def __post_init__(self) -> None:
        for name in ("dim", "epochs", "eval_every", "k", "eval_negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")

    def to_flat(self) -> dict[str, Any]:
        """The settings as one flat mapping (the training section's keys inlined), as a
        run's ``summary.json`` records its config."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "training"}
        return {**flat, **asdict(self.training)}


def evaluate_model(model: Recommender, split: LeaveOneOutSplit, k: int, validation: bool = False) -> dict[str, float]:
    """Mean metrics over evaluated users of a model holding every user's vector."""
    if model.n_users != split.n_users:
        raise ValueError("the model must hold one user vector per user of the split")
    users = split.evaluated_users()
    rows = []
    for start in range(0, len(users), EVAL_BATCH_USERS):
        batch = users[start : start + EVAL_BATCH_USERS]
        scores = score_all_items(model, batch)
        rows += [evaluate_user(scores[j], split.user_data(int(u)), k, validation) for j, u in enumerate(batch)]
    return mean_metrics(rows)


def _item_features(config: CentralConfig) -> ItemFeatures | None:
    """The dataset's item features for a feature model; ``None`` for the others."""
    if not needs_item_features(config.model):
        return None
    if not config.dataset:
        raise ValueError(f"model {config.model} reads item features: give CentralConfig.dataset "
                         "(and data_dir), the dataset the split was made from")
    return dataset_item_features(config.dataset, config.data_dir, config.seed)


EpochCallback = Callable[[dict[str, float]], None]


def _excluded_pairs(split: LeaveOneOutSplit, pool: str) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) pairs never drawn as negatives: the training pairs, with ``unseen-all``
    every user's validation and test items too, and with ``unseen-eval`` also every user's
    sampled evaluation negatives."""
    if pool not in NEGATIVE_POOLS:
        raise ValueError(f"unknown train-negatives pool {pool!r}: choose one of {NEGATIVE_POOLS}")
    users, items = split.train_users(), split.train_items
    if pool in ("unseen-all", "unseen-eval"):
        for held in (split.validation_item, split.test_item):
            who = np.flatnonzero(held >= 0)
            users, items = np.concatenate([users, who]), np.concatenate([items, held[who]])
    if pool == "unseen-eval":  # every evaluated user's sampled evaluation negatives too
        for u in split.evaluated_users():
            negatives = split.user_data(int(u)).eval_negatives
            users = np.concatenate([users, np.full(len(negatives), u, dtype=np.int64)])
            items = np.concatenate([items, negatives])
    return users.astype(np.int64), items.astype(np.int64)


def train_central(
    split: LeaveOneOutSplit, config: CentralConfig, on_epoch: EpochCallback | None = None
) -> tuple[Recommender, list[dict[str, float]]]:
    """Train centrally; returns the model and one history row per epoch.

    Each row holds ``epoch``, ``wall_seconds``, ``train_loss`` and, on evaluation
    epochs (every ``eval_every`` and the last), the metrics of :func:`evaluate_model`.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, 1])
    model = build_model(config.model, split.n_users, split.n_items, config.dim, seed=config.seed,
                        item_features=_item_features(config))
    optimizer = make_optimizer(list(model.parameters()), config.training)
    users = split.train_users()
    items = split.train_items
    key = positives_key(*_excluded_pairs(split, config.train_negatives), split.n_items)
    history = []
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        loss, _ = train_epoch(model, optimizer, users, items, config.training, rng, key)
        row: dict[str, float] = {"epoch": epoch, "train_loss": loss}
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            row.update(evaluate_model(model, split, config.k, config.validation))
        row["wall_seconds"] = time.perf_counter() - start
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    return model, history
