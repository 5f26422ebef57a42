"""The names a run-config key chooses from, defined once, with no torch, numpy or scipy import.

The run config validates these keys when it is built, and the command line shows them as
choices; both must load fast (``fedrec --help``), so the names live here rather than in the
modules that use them. Those modules import them from here and re-export them, so they can
still be imported from where they are used:

========================  ==========================================================
names                     used by (and re-exported from)
========================  ==========================================================
the model names           :mod:`fedrec.core.models.registry` (its registries map them
                          to classes)
:data:`PERSONAL_OPTIONS`  :mod:`fedrec.core.models.personal`
:data:`LOSSES`,           :mod:`fedrec.core.training.implicit`
:data:`NEGATIVE_POOLS`
:data:`OPTIMIZERS`        :mod:`fedrec.core.training.optimizers`
:data:`DEVICES`           :mod:`fedrec.core.training.device`
========================  ==========================================================
"""

from __future__ import annotations

# implicit-feedback rankers built from (n_users, n_items, dim) (registry.MODELS), those that
# also read the item features (registry.FEATURE_MODELS) and explicit-rating regressors
# (registry.RATING_MODELS)
MODEL_NAMES = ("mf", "gmf", "mlp", "neumf")
FEATURE_MODEL_NAMES = ("hybrid", "content")
RATING_MODEL_NAMES = ("explicit-mf",)
# models of the other families (fedrec.core.families), built there: the next-item sequence
# model and federated item-kNN (no torch module: two summed arrays)
SEQUENCE_MODELS = ("sasrec",)
NEIGHBOURHOOD_MODELS = ("item-knn",)

# personalised parts an implicit ranker keeps on the device (fedrec.core.models.personal)
PERSONAL_OPTIONS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "head": frozenset({"head"}),
    "tune": frozenset({"tune"}),
    "head+tune": frozenset({"head", "tune"}),
}

# local training (fedrec.core.training.implicit): the losses, and where training negatives
# are drawn from
LOSSES = ("bce", "bpr")
NEGATIVE_POOLS = ("unseen-train", "unseen-all", "unseen-eval")
# the pools that need each user's sampled evaluation negatives while it trains
POOLS_READING_EVALUATION_NEGATIVES = ("unseen-eval",)
# the client optimisers every training path accepts (fedrec.core.training.optimizers)
OPTIMIZERS = ("sgd", "adam")
# where local training runs (fedrec.core.training.device)
DEVICES = ("cpu", "cuda", "auto")


def personal_parts(option: str) -> frozenset[str]:
    """The parts ``option`` turns on (``ValueError`` for an unknown option)."""
    if option not in PERSONAL_OPTIONS:
        raise ValueError(f"unknown personal option {option!r}: choose one of {list(PERSONAL_OPTIONS)}")
    return PERSONAL_OPTIONS[option]


def check_optimizer(name: str) -> str:
    """``name`` if it is one of :data:`OPTIMIZERS`, else ``ValueError`` naming the choices."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose one of {OPTIMIZERS}")
    return name
