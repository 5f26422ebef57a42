"""The explicit-rating path: a per-user rating hold-out, MSE training and RMSE/MAE.

Beside the implicit-feedback path (:mod:`fedrec.core.data.split`,
:mod:`fedrec.core.training.implicit`, :mod:`fedrec.core.training.local_round`), for models of
:data:`fedrec.core.models.registry.RATING_MODELS` that predict stars ``r̂``:

* **Split.** Each user's ratings (ordered by item id) are shuffled by a generator
  seeded by ``(seed, user, RATING_SPLIT_STREAM)`` and ``⌈f · n_u⌉`` of them are held out
  for test (``f = test_fraction``), always leaving at least one training rating; a user
  with a single rating keeps it for training. A client can recompute its own hold-out
  from its own ratings alone.
* **Loss.** ``(1/|B|) Σ_{(u,i,r) ∈ B} [(r̂_ui − r)² + λ · penalty(u, i)]`` per batch, where
  ``penalty`` is the model's per-rating L2 term (:meth:`ExplicitMF.penalty
  <fedrec.core.models.explicit_mf.ExplicitMF.penalty>`) and ``λ = l2``. The penalty
  only touches the rows a rating uses, so the item-table update stays row-sparse.
* **Local round.** As :func:`fedrec.core.training.local_round.train_user`: optionally
  ``user_epochs`` on the local part (user vector and bias) with the global part frozen,
  then ``local_epochs`` on everything; the update ``Δ = x' − x`` covers the global part
  only, the local part stays with the user.
* **Metrics.** ``RMSE = sqrt(mean((r̂ − r)²))`` and ``MAE = mean(|r̂ − r|)`` in stars over
  the held-out ratings, with ``r̂`` clipped to the observed rating range. Pooled over
  users by rating counts, ``RMSE² = Σ_u n_u RMSE_u² / Σ_u n_u`` and
  ``MAE = Σ_u n_u MAE_u / Σ_u n_u`` — exactly the metrics over all held-out ratings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from fedrec.core.arrays import Arrays, to_numpy
from fedrec.core.data.interactions import Interactions
from fedrec.core.evaluation.ratings import mae, rmse
from fedrec.core.models.base import Recommender, global_state, local_state
from fedrec.core.models.explicit_mf import GLOBAL_MEAN
from fedrec.core.models.registry import RATING_MODELS, build_model, one_user_model
from fedrec.core.training.local_round import LocalResult, new_local_parameters
from fedrec.core.training.optimizers import build_optimizer, check_optimizer

RATING_SPLIT_STREAM = 53  # the hold-out's generator stream, apart from every other draw
RECONSTRUCT_STREAM = 31  # evaluation-time reconstruction, as in local_update
RMSE, MAE, NUM_RATINGS = "rmse", "mae", "num_ratings"


# --- the split -----------------------------------------------------------------------


@dataclass(frozen=True)
class UserRatings:
    """One user's ratings, as its client holds them (dense ids, stars).

    Attributes:
        user: dense user index.
        n_items: catalogue size.
        train_items, train_ratings: ``(n_train,)`` training ratings.
        test_items, test_ratings: ``(n_test,)`` held-out ratings.
        rating_range: ``(lowest, highest)`` star of the whole data set, to clip predictions.
    """

    user: int
    n_items: int
    train_items: NDArray[np.int64]
    train_ratings: NDArray[np.float32]
    test_items: NDArray[np.int64]
    test_ratings: NDArray[np.float32]
    rating_range: tuple[float, float]


@dataclass(frozen=True)
class RatingSplit:
    """Per-user rating hold-out in CSR form.

    ``train_items[train_indptr[u]:train_indptr[u+1]]`` and the same slice of
    ``train_ratings`` are user ``u``'s training ratings; likewise for test.
    """

    n_users: int
    n_items: int
    train_indptr: NDArray[np.int64]
    train_items: NDArray[np.int64]
    train_ratings: NDArray[np.float32]
    test_indptr: NDArray[np.int64]
    test_items: NDArray[np.int64]
    test_ratings: NDArray[np.float32]
    rating_range: tuple[float, float]
    seed: int
    test_fraction: float

    def train_users(self) -> NDArray[np.int64]:
        """``(n_train,)`` dense user of every training rating."""
        return np.repeat(np.arange(self.n_users), np.diff(self.train_indptr))

    def test_users(self) -> NDArray[np.int64]:
        """``(n_test,)`` dense user of every held-out rating."""
        return np.repeat(np.arange(self.n_users), np.diff(self.test_indptr))

    def train_mean(self) -> float:
        """Mean training rating ``μ̂`` — the global-mean predictor and a starting ``μ``."""
        return float(self.train_ratings.mean())

    def user_ratings(self, user: int) -> UserRatings:
        if not 0 <= user < self.n_users:
            raise IndexError(f"user {user} outside 0..{self.n_users - 1}")
        train = slice(self.train_indptr[user], self.train_indptr[user + 1])
        test = slice(self.test_indptr[user], self.test_indptr[user + 1])
        return UserRatings(user, self.n_items, self.train_items[train], self.train_ratings[train],
                           self.test_items[test], self.test_ratings[test], self.rating_range)


def held_out_count(n_ratings: int, test_fraction: float) -> int:
    """``⌈f · n⌉`` held-out ratings, leaving at least one for training (0 when ``n ≤ 1``)."""
    if n_ratings <= 1:
        return 0
    return min(math.ceil(test_fraction * n_ratings), n_ratings - 1)


def holdout_ratings(data: Interactions, test_fraction: float = 0.1, seed: int = 0) -> RatingSplit:
    """Hold out a seeded random ``test_fraction`` of every user's ratings (module docstring)."""
    if data.ratings is None:
        raise ValueError("the data set has no ratings: the explicit-rating path needs a rating per interaction")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if len(data) == 0:
        raise ValueError("the data set has no interactions to split")
    order = np.lexsort((data.items, data.users))  # by user, then item id
    items, ratings = data.items[order], data.ratings[order].astype(np.float32)
    counts = np.bincount(data.users, minlength=data.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)])
    is_test = np.zeros(len(items), dtype=bool)
    for user in np.flatnonzero(counts > 1):
        n = int(counts[user])
        rng = np.random.default_rng([seed, int(user), RATING_SPLIT_STREAM])
        chosen = rng.permutation(n)[: held_out_count(n, test_fraction)]
        is_test[starts[user] + chosen] = True
    users = data.users[order]
    train_counts = np.bincount(users[~is_test], minlength=data.n_users)
    test_counts = np.bincount(users[is_test], minlength=data.n_users)
    return RatingSplit(
        n_users=data.n_users,
        n_items=data.n_items,
        train_indptr=np.concatenate([[0], np.cumsum(train_counts)]).astype(np.int64),
        train_items=items[~is_test].astype(np.int64),
        train_ratings=ratings[~is_test],
        test_indptr=np.concatenate([[0], np.cumsum(test_counts)]).astype(np.int64),
        test_items=items[is_test].astype(np.int64),
        test_ratings=ratings[is_test],
        rating_range=(float(ratings.min()), float(ratings.max())),
        seed=seed,
        test_fraction=test_fraction,
    )


# --- training ------------------------------------------------------------------------


@dataclass(frozen=True)
class RatingTrainingConfig:
    """Hyper-parameters of MSE training, validated once at the edge."""

    lr: float = 0.01
    batch_size: int = 64
    optimizer: str = "adam"
    l2: float = 0.0  # λ of the per-rating penalty

    def __post_init__(self) -> None:
        check_optimizer(self.optimizer)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be ≥ 0, got {self.l2}")


def make_rating_optimizer(params: list[torch.nn.Parameter], config: RatingTrainingConfig) -> torch.optim.Optimizer:
    return build_optimizer(config.optimizer, params, config.lr)


def mse_epoch(
    model: Recommender,
    optimizer: torch.optim.Optimizer,
    users: NDArray[np.int64],
    items: NDArray[np.int64],
    ratings: NDArray[np.float32],
    config: RatingTrainingConfig,
    rng: np.random.Generator,
) -> float:
    """One shuffled pass of regularised MSE steps over ``(users, items, ratings)``.

    Returns the mean squared error (stars², without the penalty) over the epoch's
    examples, each measured in its batch before the step.
    """
    n = len(users)
    if not len(items) == len(ratings) == n:
        raise ValueError(f"users, items and ratings differ in length: {n}, {len(items)}, {len(ratings)}")
    if config.l2 > 0 and not hasattr(model, "penalty"):
        raise ValueError(f"l2 = {config.l2} needs a model with a per-rating penalty; {type(model).__name__} has none")
    if n == 0:
        return 0.0
    order = rng.permutation(n)
    users_t = torch.from_numpy(np.asarray(users, dtype=np.int64)[order])
    items_t = torch.from_numpy(np.asarray(items, dtype=np.int64)[order])
    ratings_t = torch.from_numpy(np.asarray(ratings, dtype=np.float32)[order])
    total = 0.0
    model.train()
    for start in range(0, n, config.batch_size):
        end = min(start + config.batch_size, n)
        batch_users, batch_items = users_t[start:end], items_t[start:end]
        optimizer.zero_grad(set_to_none=True)
        squared = torch.mean((model(batch_users, batch_items) - ratings_t[start:end]) ** 2)
        loss = squared
        if config.l2 > 0:
            loss = loss + config.l2 * torch.mean(model.penalty(batch_users, batch_items))
        loss.backward()
        optimizer.step()
        total += squared.item() * (end - start)
    return total / n


def reconstruct_rating_local(
    model: Recommender,
    items: NDArray[np.int64],
    ratings: NDArray[np.float32],
    config: RatingTrainingConfig,
    epochs: int,
    rng: np.random.Generator,
) -> None:
    """Fit the local part of a one-user model by MSE with the global part frozen (FedRecon)."""
    if model.n_users != 1:
        raise ValueError("reconstruction works on a one-user (client) model")
    params = dict(model.named_parameters())
    frozen = [params[name] for name in model.global_parameter_names]
    for p in frozen:
        p.requires_grad_(False)
    try:
        optimizer = make_rating_optimizer([params[n] for n in model.local_parameter_names], config)
        users = np.zeros(len(items), dtype=np.int64)
        for _ in range(epochs):
            mse_epoch(model, optimizer, users, items, ratings, config, rng)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def initial_rating_arrays(model_name: str, n_items: int, dim: int, seed: int, global_mean: float) -> Arrays:
    """The global part a run starts from, with ``μ`` set to ``global_mean``.

    ``global_mean`` is the mean training rating (a sum and a count per client, both
    aggregates) or, with no look at the data, the middle of the rating scale.
    """
    model = build_model(_rating_model(model_name), 1, n_items, dim, seed=seed)
    arrays = to_numpy(global_state(model))
    arrays[GLOBAL_MEAN] = np.full_like(arrays[GLOBAL_MEAN], global_mean)
    return arrays


def train_rating_user(
    model_name: str,
    dim: int,
    global_arrays: Arrays,
    local_arrays: Arrays,
    user: UserRatings,
    config: RatingTrainingConfig,
    local_epochs: int,
    rng: np.random.Generator,
    user_epochs: int = 0,
) -> LocalResult:
    """One user's local round by MSE; returns ``Δ`` of the global part and the new local part.

    A new user's ``local_arrays`` come from
    :func:`fedrec.core.training.local_round.new_local_parameters` (seeded by ``(seed, user)``).
    ``num_examples`` counts the ratings seen, ``loss`` is the mean MSE (stars²).
    """
    model = one_user_model(_rating_model(model_name), dim, user.n_items, global_arrays, local_arrays)
    if user_epochs > 0:
        reconstruct_rating_local(model, user.train_items, user.train_ratings, config, user_epochs, rng)
    optimizer = make_rating_optimizer(list(model.parameters()), config)
    users = np.zeros(len(user.train_items), dtype=np.int64)
    losses = [mse_epoch(model, optimizer, users, user.train_items, user.train_ratings, config, rng)
              for _ in range(local_epochs)]
    new_global = to_numpy(global_state(model))
    update = {k: new_global[k] - global_arrays[k] for k in global_arrays}
    examples = local_epochs * len(user.train_items)
    return LocalResult(update, to_numpy(local_state(model)), examples, float(np.mean(losses)) if losses else 0.0)


# --- evaluation ----------------------------------------------------------------------


@torch.no_grad()
def predict_ratings(
    model: Recommender, users: NDArray[np.int64], items: NDArray[np.int64], rating_range: tuple[float, float]
) -> NDArray[np.float32]:
    """``(n,)`` predicted stars of the pairs ``(users[j], items[j])``, clipped to ``rating_range``."""
    model.eval()
    predicted = model(torch.from_numpy(np.asarray(users, dtype=np.int64)),
                      torch.from_numpy(np.asarray(items, dtype=np.int64)))
    return predicted.clamp(*rating_range).numpy()


def rating_metrics(predicted: NDArray[np.floating], actual: NDArray[np.floating]) -> dict[str, float]:
    """``{rmse, mae, num_ratings}`` of predictions against the true stars."""
    if len(actual) == 0:
        raise ValueError("no held-out ratings to evaluate")
    return {RMSE: rmse(predicted, actual), MAE: mae(predicted, actual), NUM_RATINGS: float(len(actual))}


def pool_rating_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Pool per-user ``{rmse, mae, num_ratings}`` into the metrics over all their ratings."""
    rows = [row for row in rows if row[NUM_RATINGS] > 0]
    if not rows:
        raise ValueError("no user had held-out ratings")
    n = np.asarray([row[NUM_RATINGS] for row in rows])
    squared = np.asarray([row[RMSE] ** 2 for row in rows])
    absolute = np.asarray([row[MAE] for row in rows])
    total = float(n.sum())
    return {RMSE: math.sqrt(float(n @ squared) / total), MAE: float(n @ absolute) / total, NUM_RATINGS: total}


def user_rating_metrics(
    model_name: str,
    dim: int,
    global_arrays: Arrays,
    local_arrays: Arrays | None,
    user: UserRatings,
    config: RatingTrainingConfig,
    reconstruct_epochs: int,
    seed: int,
) -> dict[str, float]:
    """One user's ``{rmse, mae, num_ratings}`` on its held-out ratings (a client's evaluation).

    The local part (stored, or fresh for a new user) is first fitted for
    ``reconstruct_epochs`` on the user's training ratings with the global part frozen
    (generator ``(seed, user, RECONSTRUCT_STREAM)``); the stored part is not changed.
    """
    if len(user.test_items) == 0:
        return {RMSE: 0.0, MAE: 0.0, NUM_RATINGS: 0.0}
    if local_arrays is None:
        local_arrays = new_local_parameters(model_name, user.n_items, dim, seed, user.user)
    model = one_user_model(_rating_model(model_name), dim, user.n_items, global_arrays, local_arrays)
    if reconstruct_epochs > 0 and len(user.train_items) > 0:
        rng = np.random.default_rng([seed, user.user, RECONSTRUCT_STREAM])
        reconstruct_rating_local(model, user.train_items, user.train_ratings, config, reconstruct_epochs, rng)
    zeros = np.zeros(len(user.test_items), dtype=np.int64)
    return rating_metrics(predict_ratings(model, zeros, user.test_items, user.rating_range), user.test_ratings)


def evaluate_rating_model(model: Recommender, split: RatingSplit) -> dict[str, float]:
    """``{rmse, mae, num_ratings}`` over every held-out rating of a model holding all users."""
    if model.n_users != split.n_users:
        raise ValueError(f"the model holds {model.n_users} users, the split has {split.n_users}")
    predicted = predict_ratings(model, split.test_users(), split.test_items, split.rating_range)
    return rating_metrics(predicted, split.test_ratings)


def global_mean_metrics(split: RatingSplit) -> dict[str, float]:
    """The global-mean predictor ``r̂ = μ̂`` (mean training rating): the floor to beat."""
    predicted = np.full(len(split.test_ratings), split.train_mean(), dtype=np.float32)
    return rating_metrics(predicted, split.test_ratings)


def train_rating_central(
    split: RatingSplit, model: Recommender, config: RatingTrainingConfig, epochs: int, rng: np.random.Generator
) -> list[float]:
    """Central MSE training of a model holding every user; returns each epoch's mean MSE."""
    if model.n_users != split.n_users or model.n_items != split.n_items:
        raise ValueError(f"the model is sized ({model.n_users}, {model.n_items}), "
                         f"the split ({split.n_users}, {split.n_items})")
    optimizer = make_rating_optimizer([p for p in model.parameters() if p.requires_grad], config)
    users = split.train_users()
    return [mse_epoch(model, optimizer, users, split.train_items, split.train_ratings, config, rng)
            for _ in range(epochs)]


# --- helpers of this module ----------------------------------------------------------


def _rating_model(model_name: str) -> str:
    if model_name not in RATING_MODELS:
        raise ValueError(f"{model_name!r} is not a rating model: choose one of {sorted(RATING_MODELS)}")
    return model_name


