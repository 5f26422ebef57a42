"""Local training: negative sampling, one epoch of a loss, and user reconstruction.

The same functions train a client's one user (``users`` all 0, ``n_users=1``) and
the central twin's whole population, so that both optimise the same objective.

Losses (``s`` are logits, ``σ`` the logistic function):

* ``bce``: every training positive ``(u, i)`` is paired with ``negatives`` items
  ``j`` sampled uniformly among items ``u`` has not trained on; the loss is
  ``-log σ(s_ui) - Σ_j log(1 - σ(s_uj))``, averaged over the ``1 + negatives``
  examples (NCF, He et al. 2017).
* ``bpr``: each positive is paired with ``negatives`` sampled items and the loss is
  ``-log σ(s_ui - s_uj)`` averaged over pairs (Rendle et al., 2009).
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional as F

# the choices and the training section are defined, torch-free, with the run config; re-exported here
from fedrec.core.config.choices import LOSSES as LOSSES
from fedrec.core.config.choices import NEGATIVE_POOLS, POOLS_READING_EVALUATION_NEGATIVES
from fedrec.core.config.training_section import TrainingConfig
from fedrec.core.data.split import UserData
from fedrec.core.models.base import Recommender
from fedrec.core.training.optimizers import build_optimizer


def make_optimizer(
    params: list[torch.nn.Parameter], config: TrainingConfig
) -> torch.optim.Optimizer:
    return build_optimizer(config.optimizer, params, config.lr, config.weight_decay)


def sample_negatives(
    users: NDArray[np.int64],
    positives_key: NDArray[np.int64],
    n_items: int,
    per_positive: int,
    rng: np.random.Generator,
) -> NDArray[np.int64]:
    """``(len(users), per_positive)`` items each user has not trained on.

    ``positives_key`` is the sorted array of ``user * n_items + item`` over the
    training positives; collisions are redrawn until none is left.
    """
    negatives = rng.integers(0, n_items, size=(len(users), per_positive))
    for _ in range(100):
        keys = users[:, None] * n_items + negatives
        collide = _contains(positives_key, keys)
        if not collide.any():
            return negatives
        negatives[collide] = rng.integers(0, n_items, size=int(collide.sum()))
    raise ValueError("could not sample negatives: some user has interacted with almost every item")


def negative_key(user: UserData, pool: str = "unseen-train") -> NDArray[np.int64]:
    """The sorted key of the items a user's training negatives are never drawn from.

    ``unseen-train``: its training items (a held-out item can be drawn as a negative, as it can
    be in NCF's own code). ``unseen-all``: also its validation and test items — what the data
    loader shared by much of the federated-recommendation literature does (negatives are drawn
    from the items a user never interacted with, held-out ones included), which keeps the test
    item from ever being pushed down in training and so raises HR@K under leave-one-out.

    That raise is partly a **label leak**: the sampled evaluation negatives are pushed down as
    training negatives while the test item never is, so a model that trains locally for long
    enough (post-tuning, a local head) learns "never a negative" and ranks the test item first
    by it, not by taste (``tests/core/training/test_negative_pool.py`` ranks the candidates by
    their negative draws alone). ``unseen-eval`` keeps the papers' property without the leak:
    it also excludes the user's sampled evaluation negatives, so no evaluation candidate — the
    held-out items and the 99 negatives alike — is ever a training negative, and the candidates
    stay exchangeable. It needs ``user.eval_negatives`` (drawn for training too, see
    :func:`needs_evaluation_negatives`).
    """
    if pool not in NEGATIVE_POOLS:
        raise ValueError(f"unknown train-negatives pool {pool!r}: choose one of {NEGATIVE_POOLS}")
    excluded = user.train_items
    if pool in ("unseen-all", "unseen-eval"):
        held_out = [i for i in (user.validation_item, user.test_item) if i >= 0]
        excluded = np.concatenate([excluded, np.asarray(held_out, dtype=np.int64)])
    if pool == "unseen-eval":
        if user.eval_negatives is None:
            raise ValueError(f"train-negatives unseen-eval: user {user.user}'s evaluation negatives were not drawn "
                             "(build its data with for_evaluation=needs_evaluation_negatives(pool))")
        excluded = np.concatenate([excluded, user.eval_negatives.astype(np.int64)])
    return positives_key(np.zeros(len(excluded), dtype=np.int64), excluded, user.n_items)


def needs_evaluation_negatives(pool: str) -> bool:
    """Whether a user's training data must carry its evaluation negatives (``unseen-eval``)."""
    return pool in POOLS_READING_EVALUATION_NEGATIVES


def positives_key(users: NDArray[np.int64], items: NDArray[np.int64], n_items: int) -> NDArray[np.int64]:
    return np.unique(users.astype(np.int64) * n_items + items.astype(np.int64))


def _contains(sorted_keys: NDArray[np.int64], queries: NDArray[np.int64]) -> NDArray[np.bool_]:
    idx = np.searchsorted(sorted_keys, queries)
    idx = np.minimum(idx, len(sorted_keys) - 1)
    return sorted_keys[idx] == queries


def batch_loss(
    model: Recommender,
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    loss: str,
) -> torch.Tensor:
    """Mean loss of a batch: ``users, positives (b,)``, ``negatives (b, n)``."""
    n = negatives.shape[1]
    pos_scores = model(users, positives)
    neg_scores = model(users.repeat_interleave(n), negatives.reshape(-1)).view(-1, n)
    if loss == "bce":
        scores = torch.cat([pos_scores[:, None], neg_scores], dim=1)
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(scores, labels)
    return -F.logsigmoid(pos_scores[:, None] - neg_scores).mean()


def epoch_plan(
    users: NDArray[np.int64],
    items: NDArray[np.int64],
    key: NDArray[np.int64],
    n_items: int,
    negatives: int,
    rng: np.random.Generator,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """One epoch's examples in training order: ``(users, positives, negatives (n, k))``.

    Draws from ``rng`` in a fixed sequence (negatives, then the permutation), so any
    executor that replays a user's generator trains on the same batches.
    """
    sampled = sample_negatives(users, key, n_items, negatives, rng)
    order = rng.permutation(len(users))
    return users[order], items[order], sampled[order]


def train_epoch(
    model: Recommender,
    optimizer: torch.optim.Optimizer,
    users: NDArray[np.int64],
    items: NDArray[np.int64],
    config: TrainingConfig,
    rng: np.random.Generator,
    key: NDArray[np.int64] | None = None,
) -> tuple[float, int]:
    """One pass over the positives ``(users, items)`` with fresh negatives.

    Returns ``(mean loss over batches weighted by batch size, number of examples)``,
    where an example is one positive or one sampled negative.
    """
    if len(users) == 0:
        return 0.0, 0
    key = positives_key(users, items, model.n_items) if key is None else key
    users_o, items_o, negatives_o = epoch_plan(users, items, key, model.n_items, config.negatives, rng)
    users_t = torch.from_numpy(users_o)
    items_t = torch.from_numpy(items_o)
    negatives_t = torch.from_numpy(negatives_o)
    n = len(users_o)
    total = 0.0
    model.train()
    for start in range(0, n, config.batch_size):
        end = start + config.batch_size
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(model, users_t[start:end], items_t[start:end], negatives_t[start:end], config.loss)
        loss.backward()
        optimizer.step()
        total += loss.item() * (min(end, n) - start)
    return total / n, n * (1 + config.negatives)


def reconstruct_local(
    model: Recommender,
    items: NDArray[np.int64],
    config: TrainingConfig,
    epochs: int,
    rng: np.random.Generator,
    key: NDArray[np.int64] | None = None,
) -> None:
    """Fit the local (user) parameters of a one-user model with the global part frozen
    (``key``: the items negatives are never drawn from; default ``items``).

    This is the cold-start path: a user who never trained — or a new user — gets a
    vector from its own training items alone (FedRecon, Singhal et al. 2021).
    """
    if model.n_users != 1:
        raise ValueError("reconstruction works on a one-user (client) model")
    params = dict(model.named_parameters())
    frozen = [params[name] for name in model.global_parameter_names]
    local = [params[name] for name in model.local_parameter_names]
    for p in frozen:
        p.requires_grad_(False)
    try:
        optimizer = make_optimizer(local, config)
        users = np.zeros(len(items), dtype=np.int64)
        key = positives_key(users, items, model.n_items) if key is None else key
        for _ in range(epochs):
            train_epoch(model, optimizer, users, items, config, rng, key)
    finally:
        for p in frozen:
            p.requires_grad_(True)


@torch.no_grad()
def score_all_items(model: Recommender, users: NDArray[np.int64]) -> NDArray[np.float32]:
    """``(len(users), n_items)`` logits for every item."""
    model.eval()
    scores = model.score_items(torch.from_numpy(users), torch.arange(model.n_items))
    return scores.numpy()
