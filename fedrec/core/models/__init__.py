"""Recommenders with a declared global/local split, picked by name from the registries."""

from fedrec.core.models.base import (
    Recommender,
    global_state,
    load_parameters,
    local_state,
)
from fedrec.core.models.registry import FEATURE_MODELS, MODELS, RATING_MODELS, build_model, needs_item_features

__all__ = [
    "FEATURE_MODELS",
    "MODELS",
    "RATING_MODELS",
    "Recommender",
    "build_model",
    "global_state",
    "load_parameters",
    "local_state",
    "needs_item_features",
]
