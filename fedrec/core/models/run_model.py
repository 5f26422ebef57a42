"""The model a run trains, built from its :class:`~fedrec.core.config.run_config.RunConfig`.

Every process of a run — the server sizing the global part, a client training its
users, the cohort executor, the torch loop — builds ``config.model`` here, so that a
feature model (``hybrid``, ``content``) always gets the same item-feature matrix: the
public catalogue metadata of ``config.dataset`` (:func:`fedrec.core.data.item_features.dataset_item_features`,
computed once per process from ``dataset``, ``data-dir`` and ``seed``; no user's
interactions enter it). The classic models get no features and are built exactly as
:func:`~fedrec.core.models.registry.build_model` builds them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.item_features import dataset_item_features
from fedrec.core.models.base import Recommender
from fedrec.core.models.registry import build_model, needs_item_features


def run_item_features(config: RunConfig) -> NDArray[np.float32] | None:
    """The ``(n_items, F)`` features ``config.model`` is built with; ``None`` for a model that takes none."""
    if not needs_item_features(config.model):
        return None
    return dataset_item_features(config.dataset, config.data_dir, config.seed).values


def build_run_model(config: RunConfig, n_users: int, n_items: int, seed: int = 0) -> Recommender:
    """``build_model(config.model, n_users, n_items, config.dim, seed)`` with the run's item features
    and personal parts."""
    return build_model(config.model, n_users, n_items, config.dim, seed=seed,
                       item_features=run_item_features(config), personal=config.personal)
