"""What ``fedrec compare`` runs: the training :class:`Budget` of each kind of row
(:data:`FULL`, :data:`QUICK`) and the :class:`CompareConfig` of one comparison."""

from __future__ import annotations

from dataclasses import asdict, dataclass

FLOAT32_BYTES = 4
SUBSAMPLE_STREAM = 61  # the --quick user subsample's generator stream
COLD_START_STREAM = 67  # cold users and new items
NEW_ITEM_TIE_STREAM = 71  # order of tied new items in a top-K list
RATING_DIM, RATING_TEST_FRACTION = 16, 0.1  # explicit MF: d and the per-user rating hold-out


@dataclass(frozen=True)
class Budget:
    """How long each kind of row trains; :data:`FULL` and :data:`QUICK` are the two used.

    Attributes:
        max_users: a seeded subsample of this many users (all their interactions); ``0``: all users.
        central_epochs: epochs of :func:`train_central` (Adam lr 1e-3, batch 256, d = 32).
        bpr_epochs: epochs of the BPR-MF baseline.
        rounds, clients_per_round, local_epochs: the federated registry models (round driver).
        dp_rounds, dp_clients_per_round: the DP row (``0`` clients: every user, q = 1).
        sequence_epochs, sequence_rounds, sequence_clients, sequence_local_epochs: SASRec.
        rating_epochs, rating_rounds, rating_clients: explicit MF, central and FedAvg.
        cold_start: whether to run the cold-start section.
    """

    max_users: int = 0
    central_epochs: int = 20
    bpr_epochs: int = 20
    rounds: int = 100
    clients_per_round: int = 100
    local_epochs: int = 2
    dp_rounds: int = 10
    dp_clients_per_round: int = 0
    sequence_epochs: int = 5
    sequence_rounds: int = 30
    sequence_clients: int = 50
    sequence_local_epochs: int = 5
    rating_epochs: int = 6
    rating_rounds: int = 10
    rating_clients: int = 200
    cold_start: bool = True

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            lowest = 0 if name in ("max_users", "dp_clients_per_round") else 1
            if not isinstance(value, bool) and value < lowest:
                raise ValueError(f"budget {name} must be ≥ {lowest}, got {value}")


# The full comparison: the federated budget of the README's ML-100K benchmark (100 rounds ×
# 100 clients × 2 local epochs ≈ 21 epochs per user) and a central twin of 20 epochs.
FULL = Budget()
# --quick: 300 users and a fraction of the training (2–4 minutes on 2 cores, by their load).
QUICK = Budget(max_users=300, central_epochs=8, bpr_epochs=10, rounds=15, clients_per_round=50, local_epochs=2,
               dp_rounds=5, sequence_epochs=2, sequence_rounds=5, sequence_clients=30, sequence_local_epochs=3,
               rating_epochs=4, rating_rounds=4, rating_clients=100)


@dataclass(frozen=True)
class CompareConfig:
    """What ``fedrec compare`` runs. ``models`` are names of :data:`~fedrec.simulations.compare.models.MODELS`."""

    dataset: str = "synthetic"
    data_dir: str = ""
    models: tuple[str, ...] = ()
    budget: Budget = FULL
    quick: bool = False
    seed: int = 0
    k: int = 10
    epsilon: float = 8.0
    delta: float = 1e-5
    cold_max_items: int = 5
    cold_user_fraction: float = 0.1
    new_item_fraction: float = 0.05
    threads: int = 1

    def __post_init__(self) -> None:
        from fedrec.simulations.compare.models import MODELS  # the rows import this module

        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(map(repr, unknown))} for fedrec compare: "
                             f"choose from {', '.join(MODELS)}")
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}: the DP rows need a budget")
        if self.k < 1 or self.cold_max_items < 1 or self.threads < 1:
            raise ValueError(f"k, cold-max-items and threads must be ≥ 1, got {self.k}, {self.cold_max_items}, "
                             f"{self.threads}")
        if not (0 < self.cold_user_fraction < 1 and 0 < self.new_item_fraction < 1):
            raise ValueError("cold-user and new-item fractions must lie in (0, 1)")

    @property
    def chosen_models(self) -> tuple[str, ...]:
        from fedrec.simulations.compare.models import DEFAULT_MODELS

        return self.models or DEFAULT_MODELS
