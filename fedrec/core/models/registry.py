"""The model registries: recommenders picked by name (``--model neumf``).

Three registries, by what a model needs beyond ``(n_users, n_items, dim)``:

* :data:`MODELS` — implicit-feedback rankers that need nothing more; every entry runs
  through the whole federated pipeline (client, cohort executor, record-level DP);
* :data:`FEATURE_MODELS` — implicit-feedback rankers that also need the item-feature
  matrix (``needs_item_features = True``), passed as ``build_model(..., item_features=F)``;
  a run builds them with its dataset's features (:mod:`fedrec.core.models.run_model`) and trains
  them like :data:`MODELS`, except with record-level DP (refused for now) and on deployed
  devices (which get no features yet);
* :data:`RATING_MODELS` — explicit-rating regressors, trained with the squared error of
  :mod:`fedrec.core.training.ratings` instead of the ranking losses.

:func:`build_model` is the one front door to all three.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from fedrec.core.arrays import Arrays
from fedrec.core.config.choices import (
    FEATURE_MODEL_NAMES,
    MODEL_NAMES,
    RATING_MODEL_NAMES,
)
from fedrec.core.config.choices import NEIGHBOURHOOD_MODELS as NEIGHBOURHOOD_MODELS
from fedrec.core.config.choices import SEQUENCE_MODELS as SEQUENCE_MODELS
from fedrec.core.data.item_features import ItemFeatures
from fedrec.core.models.base import Recommender, load_parameters
from fedrec.core.models.content import ContentRanker
from fedrec.core.models.explicit_mf import ExplicitMF
from fedrec.core.models.gmf import GMF
from fedrec.core.models.hybrid import Hybrid
from fedrec.core.models.mf import MF
from fedrec.core.models.mlp import MLP
from fedrec.core.models.neumf import NeuMF
from fedrec.core.models.personal import personalise

# the names are defined, torch-free, with the run config (fedrec.core.config.choices), in the
# order of the classes here; SEQUENCE_MODELS and NEIGHBOURHOOD_MODELS, the models of the other
# families (fedrec.core.families, built there), are re-exported
MODELS: dict[str, type[Recommender]] = dict(zip(MODEL_NAMES, (MF, GMF, MLP, NeuMF), strict=True))
FEATURE_MODELS: dict[str, type[Recommender]] = dict(zip(FEATURE_MODEL_NAMES, (Hybrid, ContentRanker), strict=True))
RATING_MODELS: dict[str, type[Recommender]] = dict(zip(RATING_MODEL_NAMES, (ExplicitMF,), strict=True))

ItemFeatureInput = ItemFeatures | NDArray[np.floating] | torch.Tensor


def model_class(name: str) -> type[Recommender]:
    """The class registered under ``name`` in any of the registries."""
    for registry in (MODELS, FEATURE_MODELS, RATING_MODELS):
        if name in registry:
            return registry[name]
    known = sorted([*MODELS, *FEATURE_MODELS, *RATING_MODELS])
    raise ValueError(f"unknown model {name!r}: choose one of {known}")


def needs_item_features(name: str) -> bool:
    """Whether model ``name`` must be built with ``item_features``."""
    return bool(getattr(model_class(name), "needs_item_features", False))


def build_model(
    name: str,
    n_users: int,
    n_items: int,
    dim: int,
    seed: int = 0,
    item_features: ItemFeatureInput | None = None,
    personal: str = "none",
) -> Recommender:
    """Build a registered model with parameters drawn from a seeded generator.

    ``item_features`` (``(n_items, F)``, e.g. from
    :func:`fedrec.core.data.item_features.item_features_for`) is passed only to models
    that declare ``needs_item_features``; the others ignore it, so their parameters
    are the same with or without it. ``personal`` (:mod:`fedrec.core.models.personal`) moves
    the score head into the local part; the parameters' values do not change.
    """
    cls = model_class(name)
    if needs_item_features(name):
        if item_features is None:
            raise ValueError(
                f"model {name!r} needs item features: pass item_features, an (n_items, F) matrix "
                "(fedrec.core.data.item_features.item_features_for)"
            )
        values = item_features.values if isinstance(item_features, ItemFeatures) else item_features
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return personalise(cls(n_users, n_items, dim, values), personal)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return personalise(cls(n_users, n_items, dim), personal)


def one_user_model(model_name: str, dim: int, n_items: int, global_arrays: Arrays, local_arrays: Arrays,
                   item_features: ItemFeatureInput | None = None, personal: str = "none") -> Recommender:
    """A one-user (client) model of ``model_name`` holding the given global and local parameters."""
    model = build_model(model_name, 1, n_items, dim, item_features=item_features, personal=personal)
    load_parameters(model, {k: torch.from_numpy(np.asarray(v)) for k, v in global_arrays.items()}, "global")
    load_parameters(model, {k: torch.from_numpy(np.asarray(v)) for k, v in local_arrays.items()}, "local")
    return model
