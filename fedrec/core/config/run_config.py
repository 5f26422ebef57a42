"""The run configuration shared by the ServerApp, the ClientApp and the CLI.

Flower carries the run config as a flat ``{str: scalar}`` mapping (``context.run_config``,
filled from ``[tool.flwr.app.config]`` and ``--run-config`` overrides). This module is
the one place where those keys are named, typed and validated.

Sections. The keys fall into sections, each a typed, frozen dataclass in its own module
that validates itself once, when it is built: :class:`~fedrec.core.config.privacy_section.PrivacyConfig`
(``config.privacy``), :class:`~fedrec.core.config.evaluation_section.EvaluationConfig`
(``config.evaluation``), :class:`~fedrec.core.config.deployment_section.DeploymentConfig`
(``config.deployment``) and :class:`~fedrec.core.config.training_section.TrainingConfig`
(``config.training``). :class:`RunConfig` builds each from its fields the first time it is
read (every one of them in ``__post_init__``, so a bad value fails at construction) and
keeps it. A function that reads only one section's keys takes that section (e.g.
``plan.budget(config.privacy)``); one that needs keys of several takes the whole
:class:`RunConfig`. What relates keys of several sections (``dp-participations`` against
``rounds``, ``dp record`` against the executor and the model) is checked here.

Why the storage stays flat. Flower's run config is one flat mapping of kebab-case keys,
and so are ``[tool.flwr.app.config]``, ``--run-config``, ``run_config.json``, the
checkpoint's config and the command-line options generated from the fields
(:mod:`fedrec.cli.run_options`); every caller builds a :class:`RunConfig` from keyword
arguments named like the keys (``RunConfig(dp="user-central", epsilon=8.0)``,
``dataclasses.replace(config, rounds=...)``). Nesting the fields would give every one of
those places a mapping between flat keys and nested fields to keep in step. So the fields
stay flat, one per key, and the sections are views built from them: the section classes'
field names are :class:`RunConfig` field names and their defaults are the fields' defaults
(one definition each: the fields read them from the section's defaults). The built
sections are kept outside the instance (:class:`_SectionView`, not in its ``__dict__``), so
equality, hashing (a :class:`RunConfig` is an ``lru_cache`` key), pickling, ``asdict``,
``to_user_config`` and ``RunConfig(**config.__dict__)`` see the flat fields only.
"""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar, overload

# Only torch-free modules here (the choices, the sections): the command line imports this module
# to build its options, and ``fedrec --help`` must not wait for torch. What needs a model or the
# data is imported where a check needs it.
from fedrec.core.config.choices import (
    DEVICES,
    FEATURE_MODEL_NAMES,
    LOSSES,
    MODEL_NAMES,
    NEGATIVE_POOLS,
    NEIGHBOURHOOD_MODELS,
    OPTIMIZERS,
    PERSONAL_OPTIONS,
    RATING_MODEL_NAMES,
    SEQUENCE_MODELS,
    personal_parts,
)
from fedrec.core.config.deployment_section import DEPLOYMENT_DEFAULTS, DeploymentConfig
from fedrec.core.config.evaluation_section import EVALUATION_DEFAULTS, EvaluationConfig
from fedrec.core.config.privacy_section import ACCOUNTANTS, DP_MODES, NOISE_MECHANISMS, PRIVACY_DEFAULTS, PrivacyConfig
from fedrec.core.config.protocols import PROTOCOLS
from fedrec.core.config.training_section import TrainingConfig
from fedrec.core.evaluation.selection import MODEL_SELECTIONS

AGGREGATIONS = ("fedavg", "fedavg-slr", "fedadam")
EXECUTORS = ("per-client", "cohort")
# ``auto`` (the default) is resolved when a config is built: cohort, or per-client under dp record
# (Opacus clips each user's examples in its own model); a built config holds one of EXECUTORS
EXECUTOR_CHOICES = ("auto", *EXECUTORS)
# DP_MODES and ACCOUNTANTS are defined with the privacy section (imported here for the
# fields' choices and for the importers of this module)
__all__ = ["ACCOUNTANTS", "AGGREGATIONS", "CLI_COMMANDS", "DP_MODES", "EXECUTORS", "EXECUTOR_CHOICES", "RUN_MODELS", "SERVER_RUN",
           "SIMULATE", "DeploymentConfig", "EvaluationConfig", "PrivacyConfig", "RunConfig", "knob",
           "user_config_field"]
# Ranking models a run can train: the classic ones and those that also read the public item
# features of the dataset (fedrec.core.models.run_model). The rating models (explicit-mf) solve
# another task, with their own split and loss, and are not run by RunConfig.
RUN_MODELS = (*MODEL_NAMES, *FEATURE_MODEL_NAMES, *SEQUENCE_MODELS, *RATING_MODEL_NAMES, *NEIGHBOURHOOD_MODELS)

# The commands whose options are generated from the fields (fedrec.cli.run_options).
SIMULATE = "simulate"
SERVER_RUN = "server-run"
CLI_COMMANDS = (SIMULATE, SERVER_RUN)


def knob(default: Any, help: str, *, cli: tuple[str, ...] = (), choices: Sequence[str] = (),
         optional: bool = False, internal: bool = False,
         per_command: Mapping[str, Mapping[str, Any]] | None = None) -> Any:
    """A :class:`RunConfig` field with its command-line description in ``metadata``.

    ``help``: the option's help (``{default}`` is replaced by the default). ``cli``: the
    commands (:data:`CLI_COMMANDS`) that have an option for the field. ``choices``: the
    values the field accepts (shown in the help; :class:`RunConfig` validates).
    ``optional``: the option has no default on the command line; not given, the field keeps
    its default (or a resumed run's value), given, it must be positive. ``internal``: set
    by fedrec itself, never by ``--run-config``. ``per_command``: ``{command: {"default":
    ..., "help": ...}}`` where one command differs.
    """
    unknown = sorted(set(cli) - set(CLI_COMMANDS))
    if unknown:
        raise ValueError(f"unknown commands {unknown}: choose from {CLI_COMMANDS}")
    metadata = {"help": help, "cli": tuple(cli), "choices": tuple(choices), "optional": optional,
                "internal": internal, "per_command": dict(per_command or {})}
    return field(default=default, metadata=metadata)


Section = TypeVar("Section")


class _SectionView(Generic[Section]):
    """A read-only :class:`RunConfig` attribute holding one section, built by ``build`` the
    first time it is read for a config value and kept in a weak mapping beside the class
    (equal configs share it; it goes with the last of them). Nothing is stored on the
    instance, so its ``__dict__`` holds exactly the fields."""

    def __init__(self, build: Callable[["RunConfig"], Section]) -> None:
        self._build = build
        self._built: weakref.WeakKeyDictionary[RunConfig, Section] = weakref.WeakKeyDictionary()
        self.__doc__ = build.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.__name__ = name

    @overload
    def __get__(self, config: None, owner: type | None = None) -> "_SectionView[Section]": ...

    @overload
    def __get__(self, config: "RunConfig", owner: type | None = None) -> Section: ...

    def __get__(self, config: "RunConfig | None", owner: type | None = None) -> Any:
        if config is None:
            return self
        try:
            return self._built[config]
        except KeyError:
            section = self._built[config] = self._build(config)
            return section

# the sections' defaults, which the fields below take as theirs (one definition each)
_P, _E, _D = PRIVACY_DEFAULTS, EVALUATION_DEFAULTS, DEPLOYMENT_DEFAULTS


@dataclass(frozen=True)
class RunConfig:
    """Every knob of a federated run (run-config keys are the names with ``-``).

    Each field's ``metadata`` (see :func:`knob`) says what the command line shows for it:
    ``fedrec simulate`` and ``fedrec server run`` generate their options from it
    (:mod:`fedrec.cli.run_options`), so a new key is one field here (and its line in
    ``[tool.flwr.app.config]``).
    """

    dataset: str = knob("synthetic", "synthetic, ml-100k or a path to a CSV file", cli=(SIMULATE,))
    data_dir: str = knob("", "folder holding ml-100k (u.data)", cli=(SIMULATE,))
    model: str = knob("mf", "the recommender; hybrid and content read the item features",
                      cli=(SIMULATE, SERVER_RUN), choices=RUN_MODELS)
    dim: int = knob(32, "embedding size", cli=(SIMULATE, SERVER_RUN))
    rounds: int = knob(5, "total rounds (default {default}; with --resume: the checkpointed run's)",
                       cli=(SIMULATE, SERVER_RUN), optional=True)
    clients_per_round: int = knob(100, "users sampled per round", cli=(SIMULATE, SERVER_RUN),
                                  per_command={SERVER_RUN: {"help": "dp user-central: expected devices per round"}})
    local_epochs: int = knob(2, "epochs of local training per round", cli=(SIMULATE, SERVER_RUN))
    user_epochs: int = knob(1, "user-vector-only epochs before local training", cli=(SIMULATE, SERVER_RUN))
    lr: float = knob(2.0, "client learning rate", cli=(SIMULATE, SERVER_RUN))
    batch_size: int = knob(16, "positives per client batch", cli=(SIMULATE,))
    negatives: int = knob(4, "sampled negatives per positive")
    loss: str = knob("bce", "the client's training loss", cli=(SIMULATE,), choices=LOSSES)
    client_optimizer: str = knob("sgd", "the client's optimiser", cli=(SIMULATE,), choices=OPTIMIZERS)
    weight_decay: float = knob(0.0, "the client optimiser's weight decay")
    aggregation: str = knob("fedavg-slr", "how the server combines the updates", cli=(SIMULATE,),
                            choices=AGGREGATIONS)
    server_lr: float = knob(20.0, "the server's step on the aggregated update", cli=(SIMULATE, SERVER_RUN))
    seed: int = knob(0, "seed of the split, the sampling and the initial model", cli=(SIMULATE, SERVER_RUN))
    eval_every: int = knob(_E.eval_every, "evaluate every N rounds", cli=(SIMULATE, SERVER_RUN))
    eval_fraction: float = knob(_E.eval_fraction, "share of users evaluated", cli=(SIMULATE,))
    eval_k: int = knob(_E.eval_k, "length of the evaluated top-K list")
    eval_negatives: int = knob(_E.eval_negatives, "sampled negatives ranked against each held-out item")
    reconstruct_epochs: int = knob(_E.reconstruct_epochs, "user-vector fit before evaluation", cli=(SIMULATE,))
    model_selection: str = knob(_E.model_selection, "the round reported: last, or best-validation (the round with "
                                "the best validation HR; the validation item never trains)", cli=(SIMULATE,),
                                choices=MODEL_SELECTIONS)
    # personalised parts kept on the device (fedrec.core.models.personal): a local score head,
    # post-tuning of the item tables before scoring, or both
    personal: str = knob("none", "personalised parts that never leave the device: head (local score head), "
                         "tune (post-tune the item tables before scoring) or head+tune", cli=(SIMULATE, SERVER_RUN),
                         choices=tuple(PERSONAL_OPTIONS))
    tune_epochs: int = knob(1, "personal tune: epochs of post-tuning before scoring", cli=(SIMULATE, SERVER_RUN))
    tune_lr: float = knob(0.0, "personal tune: the post-tuning learning rate (0: the client's lr)",
                          cli=(SIMULATE, SERVER_RUN))
    train_negatives: str = knob("unseen-train", "where training negatives come from: unseen-train (any item "
                                "outside the user's training items), unseen-all (never the user's held-out "
                                "validation/test items either, as the data loader of PFedRec/GPFedRec's code does; "
                                "leaks the test item to long local training) or unseen-eval (never any evaluation "
                                "candidate: held-out items and sampled evaluation negatives; no leak)",
                                cli=(SIMULATE,), choices=NEGATIVE_POOLS)
    protocol: str = knob("none", "ncf-loo: the NCF papers' protocol (every user every round, 100 rounds, 1 local "
                         "epoch, d=32, 4 negatives, the best-validation round reported); none: the keys as given",
                         cli=(SIMULATE,), choices=tuple(PROTOCOLS))
    checkpoint_every: int = knob(_D.checkpoint_every, "checkpoint every N rounds", cli=(SIMULATE, SERVER_RUN),
                                 per_command={SERVER_RUN: {"default": 1, "help": "checkpoint every N rounds "
                                                           "(a restarted server resumes there)"}})
    num_items: int = knob(0, "the number of items, checked against the data (0: not checked)")
    out_dir: str = knob("", "the run directory", internal=True)
    resume: bool = knob(False, "continue the checkpointed run in out-dir", internal=True)
    round_timeout: float = knob(_D.round_timeout, "seconds a round waits for replies (slower devices are left out)",
                                cli=(SERVER_RUN,), per_command={SERVER_RUN: {"default": 120.0}})
    # per-client: one simulated node per user (the reference). cohort: `cohort-nodes`
    # nodes, each training all its sampled users in one vectorised pass (core.cohort).
    executor: str = knob("auto", "auto (cohort, or per-client under --dp record), per-client (one node per user) or "
                         "cohort (a few nodes, each training its sampled users in one vectorised pass)",
                         cli=(SIMULATE, SERVER_RUN), choices=EXECUTOR_CHOICES,
                         per_command={SERVER_RUN: {"help": "how a device trains its users: auto, per-client or cohort"}})
    cohort_nodes: int = knob(2, "simulated nodes with --executor cohort", cli=(SIMULATE,))
    # where the cohort executor's tensors live: cpu, cuda or auto (cuda when visible)
    device: str = knob("cpu", "where --executor cohort trains (auto: cuda when visible)", cli=(SIMULATE,),
                       choices=DEVICES)
    # differential privacy (fedrec.core.privacy.plan): epsilon 0 = no target/budget,
    # noise-multiplier 0 = derived from epsilon; clip is C of the mode's unit.
    dp: str = knob(_P.dp, "off, record (Opacus DP-SGD on each client), user-local (clients noise their own "
                   "updates), user-central (the server noises the sum), user-distributed (clients add discrete noise "
                   "shares, the server sees the modular sum) or record-distributed (one DP step over every record a round, "
                   "summed the same way; round driver only, not Flower yet)", cli=(SIMULATE, SERVER_RUN),
                   choices=DP_MODES)
    epsilon: float = knob(_P.epsilon, "privacy budget ε per unit; σ is derived when --noise-multiplier is not given",
                          cli=(SIMULATE, SERVER_RUN), optional=True)
    delta: float = knob(_P.delta, "δ; must be below 1/number of units", cli=(SIMULATE, SERVER_RUN))
    clip: float = knob(_P.clip, "L2 clip norm C of one unit's contribution", cli=(SIMULATE, SERVER_RUN))
    noise_multiplier: float = knob(_P.noise_multiplier, "σ (noise std = σ·C); ε is then tracked",
                                   cli=(SIMULATE, SERVER_RUN), optional=True)
    accountant: str = knob(_P.accountant, "the Opacus accountant", cli=(SIMULATE, SERVER_RUN), choices=ACCOUNTANTS)
    # user-central only: let C follow the clip-quantile of update norms (Andrew et al. 2021)
    adaptive_clip: bool = knob(_P.adaptive_clip, "user-central: C follows --clip-quantile of the update norms "
                               "(Andrew et al. 2021); --clip is the start", cli=(SIMULATE,))
    clip_quantile: float = knob(_P.clip_quantile, "the update-norm quantile adaptive clipping targets", cli=(SIMULATE,))
    # record / user-local: σ from ε is planned for this many rounds per client (0: every
    # round); a client sampled more often refuses once its budget is spent
    dp_participations: int = knob(_P.dp_participations, "record/user-local: plan σ for this many rounds per "
                                  "client (0: every round); more and the client refuses", cli=(SIMULATE, SERVER_RUN))
    # record: the public Poisson rate of one record per DP-SGD step, the same for every
    # user (steps per epoch ⌈1/q⌉, noised sum divided by batch-size): nothing in the
    # mechanism depends on a user's record count, so add/remove of a record is the relation.
    # 0.25: 4 steps an epoch, an expected batch of batch-size (16) for a user of 64 records
    # (ML-100K's median user has 63); 0.1 took 2.5–5× the steps (and time) of the old schedule
    record_sample_rate: float = knob(_P.record_sample_rate, "record: the public Poisson rate of a record per DP-SGD "
                                     "step (the same for every user)", cli=(SIMULATE, SERVER_RUN))
    # every DP mode: σ_e of the evaluation releases (noise std σ_e·√K on a user's K metrics
    # in [0, 1]); 0 = derived: with a budget, evaluation gets EVAL_SHARE of ε (plan.py)
    eval_noise_multiplier: float = knob(_P.eval_noise_multiplier, "σ_e of the noised evaluation releases under "
                                        "DP (0: derived, a share of ε)", cli=(SIMULATE, SERVER_RUN))
    # user-distributed (the round driver only, so far): modulus bits, wrap-around target, dropout allowance
    ddg_bits: int = knob(_P.ddg_bits, "user-/record-distributed: the integer sum lives mod 2^bits")
    ddg_wrap_probability: float = knob(_P.ddg_wrap_probability, "user-distributed: the wrap-around probability of "
                                       "a round's sum that the grid step γ is chosen for")
    ddg_min_clients: int = knob(_P.ddg_min_clients, "user-distributed: the fewest clients whose noise share is "
                                "counted (dropout allowance; 0: every sampled client)")
    # user-central in the round driver: cyclic groups and noise correlated across rounds
    dp_mechanism: str = knob(_P.dp_mechanism, "user-central with dp-groups: the server's noise across rounds "
                             "(gaussian: independent; banded-mf: banded matrix factorisation)",
                             choices=NOISE_MECHANISMS)
    dp_groups: int = knob(_P.dp_groups, "user-central: users train in this many cyclic groups, one a round "
                          "(0: Poisson sampling); the round driver only, so far")
    # deployment (fedrec server run): the item catalogue file on the server (one raw item id
    # per line; empty in simulation), the fewest connected nodes a round waits for, and the
    # fewest valid updates a round needs to be aggregated (fewer: the round is skipped)
    catalogue: str = knob(_D.catalogue, "deployment: the item catalogue file on the server (one raw item id per line)")
    min_nodes: int = knob(_D.min_nodes, "devices a round waits for", cli=(SERVER_RUN,))
    min_valid_updates: int = knob(_D.min_valid_updates, "fewer valid updates: round skipped", cli=(SERVER_RUN,))
    # family settings (fedrec.core.families): sasrec's architecture, explicit-mf's hold-out,
    # item-knn's share bound M, neighbours per item and shrinkage
    seq_max_len: int = knob(50, "sasrec: the longest history read (longer ones keep their last items)",
                            cli=(SIMULATE,))
    seq_blocks: int = knob(1, "sasrec: causal self-attention blocks", cli=(SIMULATE,))
    seq_heads: int = knob(1, "sasrec: attention heads (dim must be divisible by it)", cli=(SIMULATE,))
    seq_dropout: float = knob(0.2, "sasrec: dropout probability", cli=(SIMULATE,))
    rating_test_fraction: float = knob(0.1, "explicit-mf: share of each user's ratings held out", cli=(SIMULATE,))
    knn_max_items: int = knob(60, "item-knn: the most items a user's share holds (M; L2 bound sqrt(M(M+1)/2))",
                              cli=(SIMULATE,))
    knn_neighbours: int = knob(20, "item-knn: neighbours kept per item", cli=(SIMULATE,))
    knn_shrink: float = knob(10.0, "item-knn: shrinkage added to the cosine's denominator", cli=(SIMULATE,))

    def __post_init__(self) -> None:
        if self.model not in RUN_MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose one of {sorted(RUN_MODELS)}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}: choose one of {DEVICES}")
        if self.executor not in EXECUTOR_CHOICES:
            raise ValueError(f"unknown executor {self.executor!r}: choose one of {EXECUTOR_CHOICES}")
        if self.executor == "auto":  # frozen: resolved once, before anything reads it
            object.__setattr__(self, "executor", "per-client" if self.dp == "record" else "cohort")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}: choose one of {AGGREGATIONS}")
        for name in ("dim", "rounds", "clients_per_round", "local_epochs", "cohort_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if not self.server_lr > 0:
            raise ValueError(f"server-lr must be > 0, got {self.server_lr}")
        if self.user_epochs < 0:
            raise ValueError(f"user-epochs must be ≥ 0, got {self.user_epochs}")
        if self.num_items < 0:
            raise ValueError(f"num-items must be ≥ 0, got {self.num_items}")
        # each section validates its own keys once, here (and is kept: see the properties)
        self.evaluation
        self.deployment
        self.training
        self._check_feature_model()
        self._check_privacy()
        self._check_personal()
        # the families read RunConfig (and import torch: building a RunConfig loads it)
        from fedrec.core.families.registry import family_of

        family_of(self.model).check(self)

    def _check_feature_model(self) -> None:
        """A feature model needs a dataset with item features and a process that can compute them."""
        if self.model not in FEATURE_MODEL_NAMES:
            return
        from fedrec.core.data.item_features import has_item_features  # reads the data modules (numpy)

        if not has_item_features(self.dataset):
            raise ValueError(f"model {self.model} reads item features, which dataset {self.dataset!r} does not "
                             "have: use ml-100k or synthetic[-<N>[k]], or a model without features "
                             f"({', '.join(sorted(MODEL_NAMES))})")
        if self.catalogue:
            raise ValueError(f"model {self.model} cannot be deployed yet: devices get only the item catalogue, "
                             "not the item features (shipping features to devices is future work); "
                             f"deploy one of {', '.join(sorted(MODEL_NAMES))}")
        if self.dp == "record":
            raise ValueError(f"dp record does not run model {self.model} yet: the record-level client round "
                             "(fedrec.core.privacy.client_round) does not pass item features to Opacus' "
                             "training; use dp user-local or user-central, or a model without features")

    def _check_privacy(self) -> None:
        """The privacy section's own checks (:class:`PrivacyConfig`) and those that relate it
        to other keys. δ against the number of units and σ against ε are checked with the
        data by :func:`fedrec.core.privacy.plan.check_against_data`."""
        privacy = self.privacy
        if not privacy.enabled:
            return
        if not privacy.dp_participations <= self.rounds:
            raise ValueError(f"dp-participations must be in 0..rounds ({self.rounds}), got {self.dp_participations}")
        if self.dp == "user-distributed":
            self._check_distributed()
        if self.dp == "record-distributed":
            self._check_record_distributed()

    def _check_record_distributed(self) -> None:
        """What ``dp record-distributed`` runs: the round driver's rounds of the implicit rankers
        (:mod:`fedrec.core.privacy.record_distributed`); the Flower apps refuse it."""
        if self.model not in MODEL_NAMES and self.model not in FEATURE_MODEL_NAMES:
            raise ValueError(f"dp record-distributed with model {self.model}: not supported; it trains the "
                             f"implicit-feedback rankers ({', '.join([*MODEL_NAMES, *FEATURE_MODEL_NAMES])})")
        if self.catalogue:
            raise ValueError("dp record-distributed runs in the round driver only so far: it cannot be deployed")
        if "tune" in personal_parts(self.personal):
            raise ValueError("dp record-distributed moves a device's local parameters only through noised sums; "
                             "tune-epochs (un-noised local fine-tuning) would leave them outside the guarantee")

    def _check_distributed(self) -> None:
        """What ``dp user-distributed`` cannot run yet. It runs in the round driver (cohort
        executor: the SecAgg+ arithmetic emulated) and in the per-client Flower simulation
        (SecAgg+ over the ServerApp/ClientApp, :mod:`fedrec.server.secure_rounds`) and
        deployed (one user per device, ``min-nodes`` devices a round); the Flower simulation
        with the cohort executor (a node holds many users) is refused by ``fedrec simulate``."""
        if self.catalogue and self.min_nodes < 2:
            raise ValueError(f"dp user-distributed deployed needs min-nodes ≥ 2 (the devices each round sums "
                             f"securely), got {self.min_nodes}")
        if self.model not in MODEL_NAMES and self.model not in FEATURE_MODEL_NAMES:
            raise ValueError(f"dp user-distributed with model {self.model}: not supported yet; the round driver "
                             "encodes the updates of the implicit-feedback rankers only "
                             f"({', '.join([*MODEL_NAMES, *FEATURE_MODEL_NAMES])})")

    def _check_personal(self) -> None:
        """Personal parts and validation-based selection exist for the implicit rankers only."""
        implicit = self.model in MODEL_NAMES or self.model in FEATURE_MODEL_NAMES
        parts = personal_parts(self.personal)
        if self.tune_epochs < 0:
            raise ValueError(f"tune-epochs must be ≥ 0, got {self.tune_epochs}")
        if self.tune_lr < 0:
            raise ValueError(f"tune-lr must be ≥ 0 (0: the client's lr), got {self.tune_lr}")
        if parts and not implicit:
            raise ValueError(f"personal {self.personal}: model {self.model} is not an implicit-feedback ranker; "
                             f"personal parts exist for {', '.join([*MODEL_NAMES, *FEATURE_MODEL_NAMES])}")
        if "head" in parts:
            if self.model in FEATURE_MODEL_NAMES or not _has_score_head(self.model, self.dim):
                raise ValueError(f"personal {self.personal}: model {self.model} has no score layer beyond its user "
                                 "vector (which is local already); a local head exists for gmf, mlp and neumf")
            if self.dp == "record":
                raise ValueError(f"personal {self.personal}: dp record trains through Opacus with the global/local "
                                 "split of the plain model (fedrec.core.privacy.record_level); use dp user-local or "
                                 "user-central with a local head")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}: choose one of {list(PROTOCOLS)}")
        if self.protocol != "none" and self.catalogue:
            raise ValueError(f"protocol {self.protocol} trains every user of a data set in every round; a deployment "
                             "(devices holding the data) has no such data set: use protocol none")
        if self.train_negatives not in NEGATIVE_POOLS:
            raise ValueError(f"unknown train-negatives {self.train_negatives!r}: choose one of {NEGATIVE_POOLS}")
        if self.train_negatives != "unseen-train" and (not implicit or self.dp in ("record", "record-distributed")):
            raise ValueError(f"train-negatives {self.train_negatives}: only the implicit rankers' user-level rounds "
                             "draw negatives from a user's item key (the record modes draw them per example)")
        if self.model_selection == "best-validation":
            if not implicit:
                raise ValueError(f"model-selection best-validation: model {self.model} has no validation "
                                 "evaluation; it exists for the implicit-feedback rankers")
            if self.dp != "off":
                raise ValueError("model-selection best-validation under DP would release each round's validation "
                                 "HR, which no accountant covers yet; use model-selection last with --dp")

    def _section(self, section: type[Section]) -> Section:
        """``section`` built from this config's fields of the same names."""
        return section(**{f.name: getattr(self, f.name) for f in fields(section)})  # type: ignore[arg-type]

    @_SectionView
    def privacy(self) -> PrivacyConfig:
        """The privacy section: ``dp`` and its mechanism's keys."""
        return self._section(PrivacyConfig)

    @_SectionView
    def evaluation(self) -> EvaluationConfig:
        """The evaluation section: when and how the run is evaluated."""
        return self._section(EvaluationConfig)

    @_SectionView
    def deployment(self) -> DeploymentConfig:
        """The deployment section: catalogue, round quorum and timeout, checkpoints."""
        return self._section(DeploymentConfig)

    @_SectionView
    def training(self) -> TrainingConfig:
        """The local-training section (``client-optimizer`` is its ``optimizer``)."""
        return TrainingConfig(
            lr=self.lr,
            batch_size=self.batch_size,
            negatives=self.negatives,
            loss=self.loss,
            optimizer=self.client_optimizer,
            weight_decay=self.weight_decay,
        )

    @property
    def tuning(self) -> TrainingConfig:
        """The post-tuning's training settings (``personal tune``): local training's, at ``tune-lr``."""
        return replace(self.training, lr=self.tune_lr) if self.tune_lr > 0 else self.training

    @classmethod
    def from_user_config(cls, config: Mapping[str, Any]) -> "RunConfig":
        """Parse a Flower run config; unknown keys are an error, missing keys take defaults."""
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ValueError(f"unknown run-config keys {unknown}; known keys: {sorted(known)}")
        values = {}
        for key, value in config.items():
            f = known[key]
            values[f.name] = _coerce(key, value, f.type)
        return cls(**values)

    def to_user_config(self) -> dict[str, Any]:
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


def _has_score_head(model: str, dim: int) -> bool:
    """Whether implicit ranker ``model`` has score layers beyond its user vector (built to see)."""
    from fedrec.core.models.personal import score_head_names  # torch: only a local head needs it
    from fedrec.core.models.registry import build_model

    return bool(score_head_names(build_model(model, 1, 1, dim)))


def _coerce(key: str, value: Any, type_name: Any) -> Any:
    kind = {"int": int, "float": float, "str": str, "bool": bool}[str(type_name)]
    if kind is bool:
        if isinstance(value, str):
            if value.lower() not in ("true", "false"):
                raise ValueError(f"run-config {key}: expected true/false, got {value!r}")
            return value.lower() == "true"
        return bool(value)
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"run-config {key}: expected an integer, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"run-config {key}: expected {kind.__name__}, got {value!r}") from err


def user_config_field(key: str, value: Any) -> tuple[str, Any]:
    """One run-config entry (``key`` with ``-``, as in ``flwr run --run-config``) as its field
    name and typed value; an unknown key is a ``ValueError`` naming the known keys. The
    value is only typed here: :class:`RunConfig` validates it with the rest."""
    known = {f.name.replace("_", "-"): f for f in fields(RunConfig)}
    if key not in known:
        raise ValueError(f"unknown run-config key {key!r}; known keys: {', '.join(sorted(known))}")
    return known[key].name, _coerce(key, value, known[key].type)
