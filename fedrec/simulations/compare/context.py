"""What every row builder of ``fedrec compare`` shares: the :class:`Context` of one
comparison, what a builder yields (:class:`Trained`), :class:`NotAvailable`, and the
checks both the central and the federated rows make."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from fedrec.core.baselines import Scorer
from fedrec.core.data.interactions import Interactions
from fedrec.core.data.item_features import has_item_features
from fedrec.core.data.split import LeaveOneOutSplit
from fedrec.core.models.registry import needs_item_features
from fedrec.simulations.compare.config import RATING_TEST_FRACTION, Budget, CompareConfig

Progress = Callable[[str], None]


class NotAvailable(Exception):
    """A row that cannot run here, with the reason (recorded, not fatal)."""


@dataclass
class Trained:
    """What a row builder produced: a fitted ``scorer`` for the one ranking evaluation
    and/or ready ``metrics`` (rating rows), the bytes training sent, and a description."""

    details: str
    scorer: Scorer | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    bytes_sent: int = 0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """The data every row of one comparison shares."""

    config: CompareConfig
    data: Interactions
    split: LeaveOneOutSplit
    diversity_features: NDArray[np.float32] | None
    scorers: dict[tuple[str, str], Scorer] = field(default_factory=dict)

    @property
    def budget(self) -> Budget:
        return self.config.budget


RowBuilder = Callable[[Context], Trained]


def check_features(model: str, ctx: Context) -> None:
    """:class:`NotAvailable` when ``model`` reads item features the dataset lacks."""
    if needs_item_features(model) and not has_item_features(ctx.config.dataset):
        raise NotAvailable(f"{model} reads item features, which dataset {ctx.config.dataset!r} does not have")


def rating_split(ctx: Context) -> Any:
    """The per-user rating hold-out of the comparison's (possibly subsampled) data."""
    from fedrec.core.training.ratings import holdout_ratings

    if ctx.data.ratings is None:
        raise NotAvailable(f"dataset {ctx.config.dataset!r} has no ratings; explicit MF predicts stars")
    return holdout_ratings(ctx.data, RATING_TEST_FRACTION, ctx.config.seed)


def sequence_modules() -> tuple[Any, Any]:
    """The sequence model and its training (:class:`NotAvailable` when absent)."""
    try:
        from fedrec.core.models import sequence
        from fedrec.core.training import sequence as sequence_training
    except ImportError as err:
        raise NotAvailable(f"the sequence model is not in this checkout ({err}); it lives in "
                           "fedrec/core/models/sequence.py and fedrec/core/training/sequence.py") from err
    return sequence, sequence_training
