"""Central baseline recommenders, all behind one :class:`Scorer` interface and one evaluation.

Baselines are picked by name from :data:`BASELINES` (``build_baseline("item-knn")``);
every one is fitted on a :class:`~fedrec.core.data.split.LeaveOneOutSplit` and
evaluated by :func:`evaluate_scorer`, as is any trained torch Recommender through
:func:`evaluate_recommender`.
"""

from __future__ import annotations

from typing import Any, Callable

from fedrec.core.baselines.bpr import BPR, BPRConfig
from fedrec.core.baselines.ease import EASE
from fedrec.core.baselines.knn import ItemKNN, UserKNN
from fedrec.core.baselines.popularity import ItemPop
from fedrec.core.baselines.scorer import (
    RecommenderScorer,
    Scorer,
    evaluate_recommender,
    evaluate_scorer,
    training_matrix,
)

BASELINES: dict[str, Callable[..., Scorer]] = {
    "itempop": ItemPop,
    "user-knn": UserKNN,
    "item-knn": ItemKNN,
    "bpr": lambda **options: BPR(BPRConfig(**options)),
    "ease": EASE,
}


def build_baseline(name: str, **options: Any) -> Scorer:
    """An unfitted baseline by name; ``options`` go to its constructor (BPR: to :class:`BPRConfig`)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}: choose one of {sorted(BASELINES)}")
    return BASELINES[name](**options)


__all__ = [
    "BASELINES",
    "BPR",
    "BPRConfig",
    "EASE",
    "ItemKNN",
    "ItemPop",
    "RecommenderScorer",
    "Scorer",
    "UserKNN",
    "build_baseline",
    "evaluate_recommender",
    "evaluate_scorer",
    "training_matrix",
]
