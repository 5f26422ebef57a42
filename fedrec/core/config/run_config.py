"""The run configuration shared by the ServerApp, the ClientApp and the CLI.

Flower carries the run config as a flat ``{str: scalar}`` mapping (``context.run_config``,
filled from ``[tool.flwr.app.config]`` and ``--run-config`` overrides). This module is
the one place where those keys are named, typed and validated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from fedrec.core.data.item_features import has_item_features
from fedrec.core.training.device import DEVICES
from fedrec.core.privacy.accounting import ACCOUNTANTS
from fedrec.core.models.registry import FEATURE_MODELS, MODELS
from fedrec.core.training.implicit import TrainingConfig

AGGREGATIONS = ("fedavg", "fedavg-slr", "fedadam")
EXECUTORS = ("per-client", "cohort")
# off: nothing is private. record: each example's gradient (Opacus, on the client).
# user-local: each client clips and noises its own update. user-central: clients clip,
# the server noises the sum (fedrec.core.privacy.plan has the details).
DP_MODES = ("off", "record", "user-local", "user-central")
# Ranking models a run can train: the classic ones and those that also read the public item
# features of the dataset (fedrec.core.models.run_model). The rating models (explicit-mf) solve
# another task, with their own split and loss, and are not run by RunConfig.
RUN_MODELS = (*MODELS, *FEATURE_MODELS)


@dataclass(frozen=True)
class RunConfig:
    """Every knob of a federated run (run-config keys are the names with ``-``)."""

    dataset: str = "synthetic"
    data_dir: str = ""
    model: str = "mf"
    dim: int = 32
    rounds: int = 5
    clients_per_round: int = 20
    local_epochs: int = 1
    user_epochs: int = 1
    lr: float = 0.05
    batch_size: int = 16
    negatives: int = 4
    loss: str = "bce"
    client_optimizer: str = "adam"
    weight_decay: float = 0.0
    aggregation: str = "fedavg-slr"
    server_lr: float = 20.0
    seed: int = 0
    eval_every: int = 5
    eval_fraction: float = 1.0
    eval_k: int = 10
    eval_negatives: int = 99
    reconstruct_epochs: int = 3
    checkpoint_every: int = 5
    num_items: int = 0
    out_dir: str = ""
    resume: bool = False
    round_timeout: float = 3600.0
    # per-client: one simulated node per user (the reference). cohort: `cohort-nodes`
    # nodes, each training all its sampled users in one vectorised pass (core.cohort).
    executor: str = "per-client"
    cohort_nodes: int = 2
    # where the cohort executor's tensors live: cpu, cuda or auto (cuda when visible)
    device: str = "cpu"
    # differential privacy (fedrec.core.privacy.plan): epsilon 0 = no target/budget,
    # noise-multiplier 0 = derived from epsilon; clip is C of the mode's unit.
    dp: str = "off"
    epsilon: float = 0.0
    delta: float = 1e-5
    clip: float = 1.0
    noise_multiplier: float = 0.0
    accountant: str = "rdp"
    # user-central only: let C follow the clip-quantile of update norms (Andrew et al. 2021)
    adaptive_clip: bool = False
    clip_quantile: float = 0.5
    # record / user-local: σ from ε is planned for this many rounds per client (0: every
    # round); a client sampled more often refuses once its budget is spent
    dp_participations: int = 0
    # record: the public Poisson rate of one record per DP-SGD step, the same for every
    # user (steps per epoch ⌈1/q⌉, noised sum divided by batch-size): nothing in the
    # mechanism depends on a user's record count, so add/remove of a record is the relation.
    # 0.25: 4 steps an epoch, an expected batch of batch-size (16) for a user of 64 records
    # (ML-100K's median user has 63); 0.1 took 2.5–5× the steps (and time) of the old schedule
    record_sample_rate: float = 0.25
    # every DP mode: σ_e of the evaluation releases (noise std σ_e·√K on a user's K metrics
    # in [0, 1]); 0 = derived: with a budget, evaluation gets EVAL_SHARE of ε (plan.py)
    eval_noise_multiplier: float = 0.0
    # deployment (fedrec server run): the item catalogue file on the server (one raw item id
    # per line; empty in simulation), the fewest connected nodes a round waits for, and the
    # fewest valid updates a round needs to be aggregated (fewer: the round is skipped)
    catalogue: str = ""
    min_nodes: int = 1
    min_valid_updates: int = 1

    def __post_init__(self) -> None:
        if self.model not in RUN_MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose one of {sorted(RUN_MODELS)}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}: choose one of {DEVICES}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}: choose one of {EXECUTORS}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}: choose one of {AGGREGATIONS}")
        positive = ("dim", "rounds", "clients_per_round", "local_epochs", "eval_every",
                    "eval_k", "checkpoint_every", "cohort_nodes")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if not 0 < self.eval_fraction <= 1:
            raise ValueError(f"eval-fraction must be in (0, 1], got {self.eval_fraction}")
        if not self.server_lr > 0:
            raise ValueError(f"server-lr must be > 0, got {self.server_lr}")
        if self.user_epochs < 0:
            raise ValueError(f"user-epochs must be ≥ 0, got {self.user_epochs}")
        if self.min_nodes < 1 or self.min_valid_updates < 1:
            raise ValueError(f"min-nodes and min-valid-updates must be ≥ 1, got {self.min_nodes}, "
                             f"{self.min_valid_updates}")
        if self.reconstruct_epochs < 0 or self.eval_negatives < 1 or self.num_items < 0:
            raise ValueError("reconstruct-epochs ≥ 0, eval-negatives ≥ 1 and num-items ≥ 0 are required")
        self.training  # validates the training hyper-parameters
        self._check_feature_model()
        self._check_privacy()

    def _check_feature_model(self) -> None:
        """A feature model needs a dataset with item features and a process that can compute them."""
        if self.model not in FEATURE_MODELS:
            return
        if not has_item_features(self.dataset):
            raise ValueError(f"model {self.model} reads item features, which dataset {self.dataset!r} does not "
                             "have: use ml-100k or synthetic[-<N>[k]], or a model without features "
                             f"({', '.join(sorted(MODELS))})")
        if self.catalogue:
            raise ValueError(f"model {self.model} cannot be deployed yet: devices get only the item catalogue, "
                             "not the item features (shipping features to devices is future work); "
                             f"deploy one of {', '.join(sorted(MODELS))}")
        if self.dp == "record":
            raise ValueError(f"dp record does not run model {self.model} yet: the record-level client round "
                             "(fedrec.core.privacy.client_round) does not pass item features to Opacus' "
                             "training; use dp user-local or user-central, or a model without features")

    def _check_privacy(self) -> None:
        """What can be checked without the data (δ against the number of units and σ
        against ε are checked by :func:`fedrec.core.privacy.plan.check_against_data`)."""
        if self.dp not in DP_MODES:
            raise ValueError(f"unknown dp mode {self.dp!r}: choose one of {DP_MODES}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant {self.accountant!r}: choose one of {ACCOUNTANTS}")
        if self.dp == "off":
            return
        if not self.epsilon >= 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}: ε is the privacy budget")
        if not self.noise_multiplier >= 0:
            raise ValueError(f"noise-multiplier must be > 0, got {self.noise_multiplier}")
        if self.epsilon == 0 and self.noise_multiplier == 0:
            raise ValueError(f"dp {self.dp} needs --epsilon (a budget; σ is derived) or "
                             "--noise-multiplier (σ; ε is tracked), or both")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if not self.clip > 0:
            raise ValueError(f"clip must be > 0, got {self.clip}: it bounds each unit's contribution")
        if not 0 <= self.dp_participations <= self.rounds:
            raise ValueError(f"dp-participations must be in 0..rounds ({self.rounds}), got {self.dp_participations}")
        if self.adaptive_clip and self.dp != "user-central":
            raise ValueError("adaptive-clip works with dp user-central only (the server adapts C from noised bits)")
        if not 0 < self.record_sample_rate <= 1:
            raise ValueError(f"record-sample-rate must be in (0, 1], got {self.record_sample_rate}")
        if not self.eval_noise_multiplier >= 0:
            raise ValueError(f"eval-noise-multiplier must be ≥ 0, got {self.eval_noise_multiplier}")
        if not 0 < self.clip_quantile < 1:
            raise ValueError(f"clip-quantile must be in (0, 1), got {self.clip_quantile}")
        if self.dp == "record" and self.executor == "cohort":
            raise ValueError("dp record trains each user through Opacus: use --executor per-client")

    @property
    def training(self) -> TrainingConfig:
        return TrainingConfig(
            lr=self.lr,
            batch_size=self.batch_size,
            negatives=self.negatives,
            loss=self.loss,
            optimizer=self.client_optimizer,
            weight_decay=self.weight_decay,
        )

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
