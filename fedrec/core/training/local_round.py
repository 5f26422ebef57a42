"""One user's local round: start from the global part, train, return the update.

This is the arithmetic a client performs (and the pure-torch benchmark loop
replays): load the global parameters ``x`` and the user's local parameters, run
``local_epochs`` epochs of :func:`~fedrec.core.training.implicit.train_epoch`, and return
``Δ = x' − x`` for the **global part only** together with the new local parameters,
which stay with the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from numpy.typing import NDArray

from fedrec.core.arrays import Arrays, to_numpy
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.item_features import ItemFeatures
from fedrec.core.data.split import UserData
from fedrec.core.evaluation.protocols import evaluate_user
from fedrec.core.models.base import Recommender, global_state, local_state
from fedrec.core.models.personal import TUNE_SEED_TAG, personal_parts
from fedrec.core.models.registry import ItemFeatureInput, build_model, one_user_model
from fedrec.core.models.run_model import run_item_features
from fedrec.core.training.implicit import (
    TrainingConfig,
    make_optimizer,
    negative_key,
    reconstruct_local,
    score_all_items,
    train_epoch,
)


@dataclass(frozen=True)
class LocalResult:
    """What one user's local round produced."""

    update: Arrays  # Δ of the global part, same keys/shapes as the global arrays
    local: Arrays  # new private parameters; never sent
    num_examples: int  # positives + sampled negatives seen
    loss: float  # mean training loss


def new_local_parameters(model_name: str, n_items: int, dim: int, seed: int, user: int,
                         item_features: ItemFeatureInput | None = None, personal: str = "none") -> Arrays:
    """A fresh user's local parameters, drawn from a generator seeded by (seed, user).

    The local part's shapes do not depend on the catalogue, so a one-item template
    (built once per process) draws them; ``n_items`` is kept for the callers' clarity.
    A feature model needs ``item_features`` (``(n_items, F)``) as it does to be built;
    the template reads only their width ``F``, so the draw does not depend on them. With a
    local score head (``personal``), the head starts from the template's values, built with
    the run's ``seed`` (the same for every user); only the user vectors are drawn.
    """
    model = _local_template(model_name, dim, _feature_width(item_features), personal, seed)
    generator = torch.Generator().manual_seed(_mix(seed, user))
    model.reset_local_parameters(generator)
    return to_numpy(local_state(model))


@lru_cache(maxsize=16)
def _local_template(model_name: str, dim: int, n_features: int, personal: str = "none",
                    seed: int = 0) -> Recommender:
    """A one-user, one-item model; a feature model gets one zero feature row of width ``n_features``.
    Its parameters are seeded by ``seed`` only when a local head needs them (``personal``)."""
    placeholder = np.zeros((1, n_features), dtype=np.float32) if n_features else None
    head_seed = seed if "head" in personal_parts(personal) else 0
    return build_model(model_name, 1, 1, dim, seed=head_seed, item_features=placeholder, personal=personal)


def _feature_width(item_features: ItemFeatureInput | None) -> int:
    """``F`` of an ``(n_items, F)`` feature matrix; 0 for none."""
    if item_features is None:
        return 0
    values = item_features.values if isinstance(item_features, ItemFeatures) else item_features
    if values.ndim != 2:
        raise ValueError(f"item features must be a (n_items, F) matrix, got shape {tuple(values.shape)}")
    return int(values.shape[1])


def train_user(
    model_name: str,
    dim: int,
    global_arrays: Arrays,
    local_arrays: Arrays,
    user: UserData,
    config: TrainingConfig,
    local_epochs: int,
    rng: np.random.Generator,
    user_epochs: int = 0,
    item_features: ItemFeatureInput | None = None,
    personal: str = "none",
    negative_pool: str = "unseen-train",
) -> LocalResult:
    """Train one user's model and return the update of the global part.

    First ``user_epochs`` epochs fit only the user's vector with the global part frozen
    (FedRecon's reconstruction step, Singhal et al. 2021: the vector catches up with
    the global model it was sent), then ``local_epochs`` epochs train everything.
    ``item_features`` (``(n_items, F)``) is required by feature models, ignored by the others.
    """
    model = one_user_model(model_name, dim, user.n_items, global_arrays, local_arrays, item_features, personal)
    key = negative_key(user, negative_pool)
    if user_epochs > 0:
        reconstruct_local(model, user.train_items, config, user_epochs, rng, key)
    optimizer = make_optimizer(list(model.parameters()), config)
    users = np.zeros(len(user.train_items), dtype=np.int64)
    losses, examples = [], 0
    for _ in range(local_epochs):
        loss, n = train_epoch(model, optimizer, users, user.train_items, config, rng, key)
        losses.append(loss)
        examples += n
    new_global = to_numpy(global_state(model))
    update = {k: new_global[k] - global_arrays[k] for k in global_arrays}
    return LocalResult(update, to_numpy(local_state(model)), examples, float(np.mean(losses)) if losses else 0.0)


def user_scores(
    model_name: str,
    dim: int,
    global_arrays: Arrays,
    local_arrays: Arrays | None,
    user: UserData,
    config: TrainingConfig,
    reconstruct_epochs: int,
    seed: int,
    item_features: ItemFeatureInput | None = None,
    personal: str = "none",
    tune_epochs: int = 0,
    tuning: TrainingConfig | None = None,
    negative_pool: str = "unseen-train",
) -> NDArray[np.float32]:
    """``(n_items,)`` scores of one user after fitting its vector to the current global part.

    The user's vector — its stored one, or a seeded fresh one for a user who never
    trained (the cold-start path) — is fitted for ``reconstruct_epochs`` epochs on the
    user's own training items with the global part frozen (FedRecon's evaluation,
    Singhal et al. 2021), so that it matches the global model it is scored with. The
    fitted vector is used for this evaluation only; the stored one is not changed.
    ``item_features`` as for :func:`train_user`. With ``tune`` in ``personal``, the fitted model —
    global part included — is then fine-tuned for ``tune_epochs`` epochs on the user's training items
    (``tuning``'s settings, default ``config``'s; a fresh optimiser, generator ``(seed, user, 37)``)
    and scores with the tuned copy
    (:mod:`fedrec.core.models.personal`); the received global part is not changed.
    """
    if local_arrays is None:
        local_arrays = new_local_parameters(model_name, user.n_items, dim, seed, user.user, item_features, personal)
    model = one_user_model(model_name, dim, user.n_items, global_arrays, local_arrays, item_features, personal)
    if reconstruct_epochs > 0 and len(user.train_items) > 0:
        rng = np.random.default_rng([seed, user.user, 31])
        reconstruct_local(model, user.train_items, config, reconstruct_epochs, rng, negative_key(user, negative_pool))
    if "tune" in personal_parts(personal) and tune_epochs > 0 and len(user.train_items) > 0:
        tune_all(model, user, tuning or config, tune_epochs, np.random.default_rng([seed, user.user, TUNE_SEED_TAG]),
                 negative_key(user, negative_pool))
    return score_all_items(model, np.zeros(1, dtype=np.int64))[0]


def tune_all(model: Recommender, user: UserData, config: TrainingConfig, epochs: int,
             rng: np.random.Generator, key: NDArray[np.int64]) -> None:
    """``epochs`` epochs of local training of every parameter of ``model`` (PFedRec's post-tuning);
    negatives are never drawn from ``key``."""
    optimizer = make_optimizer(list(model.parameters()), config)
    users = np.zeros(len(user.train_items), dtype=np.int64)
    for _ in range(epochs):
        train_epoch(model, optimizer, users, user.train_items, config, rng, key)


def user_round(
    config: RunConfig, global_arrays: Arrays, stored_local: Arrays | None, user: UserData, server_round: int
) -> LocalResult:
    """A user's training round exactly as the ClientApp runs it (and the torch loop replays).

    The stored vector, or a fresh one seeded by ``(seed, user)``; a generator seeded by
    ``(seed, user, server_round)`` for batches and negatives; a feature model gets the
    run's item features (:func:`fedrec.core.models.run_model.run_item_features`).
    """
    features = run_item_features(config)
    local = stored_local
    if local is None:
        local = new_local_parameters(config.model, user.n_items, config.dim, config.seed, user.user, features,
                                     config.personal)
    rng = np.random.default_rng([config.seed, user.user, server_round])
    return train_user(config.model, config.dim, global_arrays, local, user, config.training,
                      config.local_epochs, rng, user_epochs=config.user_epochs, item_features=features,
                      personal=config.personal, negative_pool=config.train_negatives)


def user_metrics(
    config: RunConfig, global_arrays: Arrays, stored_local: Arrays | None, user: UserData
) -> dict[str, float]:
    """A user's evaluation exactly as the ClientApp runs it (see :func:`user_scores`)."""
    scores = user_scores(config.model, config.dim, global_arrays, stored_local, user, config.training,
                         config.reconstruct_epochs, config.seed, item_features=run_item_features(config),
                         personal=config.personal, tune_epochs=config.tune_epochs, tuning=config.tuning,
                         negative_pool=config.train_negatives)
    return evaluate_user(scores, user, config.eval_k, validation=config.evaluation.validation)


def _mix(seed: int, user: int) -> int:
    return int(np.random.SeedSequence([seed, user, 17]).generate_state(1)[0])
