"""Every model family, picked by the model's name (``--model``)."""

from __future__ import annotations

from fedrec.core.families.base import ModelFamily
from fedrec.core.families.implicit import ImplicitFamily
from fedrec.core.families.itemknn import ItemKnnFamily
from fedrec.core.families.ratings import RatingFamily
from fedrec.core.families.sequence import SequenceFamily

FAMILIES: tuple[ModelFamily, ...] = (ImplicitFamily(), SequenceFamily(), RatingFamily(), ItemKnnFamily())
_BY_MODEL = {model: family for family in FAMILIES for model in family.models}


def family_of(model: str) -> ModelFamily:
    """The family that trains ``model`` (``ValueError`` naming the known models otherwise)."""
    try:
        return _BY_MODEL[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}: choose one of {sorted(_BY_MODEL)}") from None
