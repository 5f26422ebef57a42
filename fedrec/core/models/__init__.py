"""Recommenders with a declared global/local split, picked by name from one registry."""

from fedrec.core.models.base import (
    Recommender,
    global_state,
    load_parameters,
    local_state,
)
from fedrec.core.models.registry import MODELS, build_model

__all__ = ["MODELS", "Recommender", "build_model", "global_state", "load_parameters", "local_state"]
