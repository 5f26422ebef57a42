"""``fedrec compare``: every recommender family on one split, centrally and federated
(:mod:`~fedrec.simulations.compare.run` says what each row runs).

Modules: :mod:`~.config` (:class:`Budget`, :class:`CompareConfig`), :mod:`~.context` (what
the row builders share), :mod:`~.scorers`, :mod:`~.central_rows`, :mod:`~.federated_rows`
(every federated row through :func:`fedrec.core.federation.driver.run_federation`),
:mod:`~.models` (:data:`MODELS`: the builders of each model × setting), :mod:`~.cold_start`,
:mod:`~.run` (:func:`run_compare`) and :mod:`~.report` (``compare.json/.md/.png``).
"""

from fedrec.simulations.compare.cold_start import ColdStartSplit, make_cold_start_split, new_item_metrics
from fedrec.simulations.compare.config import FULL, QUICK, Budget, CompareConfig
from fedrec.simulations.compare.context import Context, NotAvailable, Trained
from fedrec.simulations.compare.federated_rows import federated_model, round_bytes
from fedrec.simulations.compare.models import COLD_START_ROWS, DEFAULT_MODELS, MODELS, ModelRows
from fedrec.simulations.compare.run import (
    CompareResult,
    build_context,
    describe_row,
    run_compare,
    run_row,
    subsample_users,
)
from fedrec.simulations.compare.scorers import FederatedScorer, MMRScorer, SequenceScorer, SimilarityScorer

__all__ = [
    "COLD_START_ROWS", "DEFAULT_MODELS", "FULL", "MODELS", "QUICK", "Budget", "ColdStartSplit", "CompareConfig",
    "CompareResult", "Context", "FederatedScorer", "MMRScorer", "ModelRows", "NotAvailable", "SequenceScorer",
    "SimilarityScorer", "Trained", "build_context", "describe_row", "federated_model", "make_cold_start_split",
    "new_item_metrics", "round_bytes", "run_compare", "run_row", "subsample_users",
]
