"""The next-item sequence model (``sasrec``) as a family.

Every parameter of SASRec is global (item embeddings, positions, attention, feed-forward):
a user's history is its only private part, and it never leaves the device. A user's round
is :func:`fedrec.core.training.sequence.sequence_user_round` (a generator seeded by
``(seed, user, round)``); a round samples among the users with at least two training items
(the shortest history that has a next item to predict), as
:func:`fedrec.core.training.sequence.trainable_users` defines them. Evaluation ranks the
held-out item after the user's training and validation items
(:func:`fedrec.core.training.sequence.sequence_user_scores`, one model for the group).

The run config maps to SASRec as: ``dim`` = d, ``lr``, ``batch-size`` (windows per step),
``negatives``, ``loss`` (``bce`` or ``bpr``), ``client-optimizer``, ``weight-decay``,
``local-epochs``; the architecture keys are ``seq-max-len``, ``seq-blocks``, ``seq-heads``,
``seq-dropout``. Refused: record-level DP (its client round is the implicit family's
Opacus path) and deployment (devices hold CSVs without timestamps).
"""

from __future__ import annotations

from typing import Sequence

import torch

from fedrec.core.arrays import Arrays, to_numpy
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.split import LeaveOneOutSplit, UserData
from fedrec.core.evaluation.protocols import evaluate_user
from fedrec.core.families.base import ModelFamily, ModelParts, UpdateTransform, add_user
from fedrec.core.families.implicit import run_split
from fedrec.core.models.sequence import SASRecConfig, load_sequence_global, sequence_global_state
from fedrec.core.training.cohort import CohortResult, empty_result
from fedrec.core.training.sequence import (
    SequenceTrainingConfig,
    sequence_user_round,
    sequence_user_scores,
    trainable_users,
)

MIN_HISTORY = 2  # a history needs a next item to predict


def sasrec_config(config: RunConfig) -> SASRecConfig:
    """The SASRec architecture ``config`` names."""
    return SASRecConfig(dim=config.dim, max_len=config.seq_max_len, blocks=config.seq_blocks,
                        heads=config.seq_heads, dropout=config.seq_dropout)


def sequence_training(config: RunConfig) -> SequenceTrainingConfig:
    """The client's next-item training settings ``config`` names."""
    return SequenceTrainingConfig(lr=config.lr, batch_size=config.batch_size, negatives=config.negatives,
                                  loss=config.loss, optimizer=config.client_optimizer,
                                  weight_decay=config.weight_decay)


class SequenceFamily(ModelFamily):
    name = "sequence"
    models = ("sasrec",)

    def refusal(self, config: RunConfig) -> str | None:
        if config.dp == "record":
            return ("dp record needs per-example gradients of the client round, which only the implicit "
                    "family's Opacus path has; use --dp user-central or user-local")
        if config.catalogue:
            return "devices hold (user, item) CSVs without time order, which a next-item model needs"
        return None

    def load_split(self, config: RunConfig) -> LeaveOneOutSplit:
        return run_split(config)

    def user_data(self, split: LeaveOneOutSplit, user: int, for_evaluation: bool = True) -> UserData:
        return split.user_data(user, for_evaluation=for_evaluation)

    def trainable_users(self, split: LeaveOneOutSplit) -> list[int]:
        return [int(u) for u in trainable_users(split)]

    def parts(self, config: RunConfig, n_items: int) -> ModelParts:
        state = sequence_global_state(sasrec_config(config).build(n_items))
        return ModelParts(tuple(state), (), {name: tuple(t.shape) for name, t in state.items()})

    def initial_global(self, config: RunConfig, split: LeaveOneOutSplit) -> Arrays:
        return to_numpy(sequence_global_state(sasrec_config(config).build(split.n_items, seed=config.seed)))

    def item_tables(self, config: RunConfig, n_items: int) -> frozenset[str]:
        return frozenset(sasrec_config(config).build(n_items).item_table_names)

    def train_users(self, config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                    users: Sequence[UserData], server_round: int, device: str | torch.device = "cpu",
                    update_transform: UpdateTransform | None = None) -> CohortResult:
        model, training = sasrec_config(config), sequence_training(config)
        result = empty_result(global_arrays)
        for user in users:
            if len(user.train_items) < MIN_HISTORY:
                continue
            one = sequence_user_round(global_arrays, user, model, training, config.local_epochs, config.seed,
                                      server_round)
            add_user(result, user.user, one.update, {}, one.num_examples, one.loss, update_transform)
        return result

    def evaluate_users(self, config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                       users: Sequence[UserData], device: str | torch.device = "cpu") -> list[dict[str, float]]:
        if not users:
            return []
        model = sasrec_config(config).build(users[0].n_items)
        load_sequence_global(model, {name: torch.from_numpy(value) for name, value in global_arrays.items()})
        return [evaluate_user(sequence_user_scores(model, user), user, config.eval_k) for user in users]
