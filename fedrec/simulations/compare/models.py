"""The models of ``fedrec compare`` and the row builder of each of their settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from fedrec.core.baselines import ItemKNN, ItemPop, UserKNN
from fedrec.simulations.compare.central_rows import (
    central_baseline,
    central_bpr,
    central_mmr,
    central_rating,
    central_registry,
    central_sequence,
)
from fedrec.simulations.compare.context import RowBuilder
from fedrec.simulations.compare.federated_rows import (
    federated_dp,
    federated_itemknn,
    federated_itempop,
    federated_rating,
    federated_registry,
    federated_sequence,
    federated_userknn,
)
from fedrec.simulations.compare.report import CENTRAL, CENTRAL_MMR, FEDERATED, FEDERATED_DP


@dataclass(frozen=True)
class ModelRows:
    """One model of the comparison: its family and a builder per setting."""

    family: str
    rows: dict[str, RowBuilder]


def _registry_rows(model: str, family: str, dp: bool = False, mmr: bool = False) -> ModelRows:
    rows: dict[str, RowBuilder] = {CENTRAL: partial(central_registry, model)}
    if mmr:
        rows[CENTRAL_MMR] = partial(central_mmr, model)
    rows[FEDERATED] = partial(federated_registry, model, "bce")
    if dp:
        rows[FEDERATED_DP] = partial(federated_dp, model)
    return ModelRows(family, rows)


MODELS: dict[str, ModelRows] = {
    "itempop": ModelRows("popularity", {
        CENTRAL: partial(central_baseline, lambda ctx: ItemPop(), "ItemPop: s(u, i) = training count of i"),
        FEDERATED: federated_itempop}),
    "user-knn": ModelRows("neighbourhood", {
        CENTRAL: partial(central_baseline, lambda ctx: UserKNN(k=50, shrink=10.0),
                         "UserKNN baseline: k = 50 neighbours, shrunk cosine (shrink 10)"),
        FEDERATED: federated_userknn}),
    "item-knn": ModelRows("neighbourhood", {
        CENTRAL: partial(central_baseline, lambda ctx: ItemKNN(k=50, shrink=10.0),
                         "ItemKNN baseline: k = 50 neighbours, shrunk cosine (shrink 10)"),
        FEDERATED: partial(federated_itemknn, False), FEDERATED_DP: partial(federated_itemknn, True)}),
    "bpr": ModelRows("matrix factorisation", {
        CENTRAL: central_bpr, FEDERATED: partial(federated_registry, "mf", "bpr")}),
    "mf": _registry_rows("mf", "matrix factorisation", dp=True, mmr=True),
    "gmf": _registry_rows("gmf", "neural"),
    "mlp": _registry_rows("mlp", "neural"),
    "neumf": _registry_rows("neumf", "neural"),
    "hybrid": _registry_rows("hybrid", "feature-based"),
    "content": _registry_rows("content", "feature-based"),
    "sequence": ModelRows("sequence", {CENTRAL: central_sequence, FEDERATED: federated_sequence}),
    "explicit-mf": ModelRows("explicit rating", {CENTRAL: central_rating, FEDERATED: federated_rating}),
}
DEFAULT_MODELS = tuple(MODELS)
# The cold-start section re-trains these (model, setting) rows on the cold-start split.
COLD_START_ROWS = (("itempop", CENTRAL), ("item-knn", CENTRAL), ("mf", CENTRAL), ("hybrid", CENTRAL),
                   ("content", CENTRAL), ("mf", FEDERATED), ("hybrid", FEDERATED), ("content", FEDERATED))
