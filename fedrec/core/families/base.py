"""The contract every model family meets, so that one round driver runs them all.

A family is what the round driver (:mod:`fedrec.core.federation.driver`), the Flower
apps and ``fedrec compare`` need to know about a kind of recommender, and nothing more:

* its **parts**: the names and shapes of the global arrays (what a client receives and
  updates) and of the local arrays (what stays with a user: never in a reply);
* its **data**: the split a run trains on (:meth:`ModelFamily.load_split`) and one user's
  share of it (:meth:`ModelFamily.user_data`), which is all a client holds;
* a **local round** for a group of users (:meth:`ModelFamily.train_users`), returning
  ``Σ_b n_b Δ_b`` and ``Σ_b n_b`` (or, with ``update_transform`` — the user-level DP
  mechanisms — ``Σ_b T(Δ_b)`` with every user weighing 1);
* an **evaluation** of a group of users (:meth:`ModelFamily.evaluate_users`) and how
  per-user rows pool into a node's reply (:meth:`ModelFamily.pool`) and the server's
  weighted mean of replies into the reported metrics (:meth:`ModelFamily.finish`);
* what it refuses (:meth:`ModelFamily.refusal`): an executor, a DP mode or a deployment
  it cannot run, with the reason.

The server step is the same for every family: ``x ← opt(x, Δ̄)`` with ``Δ̄`` the
example-weighted mean of the replies (:mod:`fedrec.core.federation.aggregation`), except
that a family whose ``releases_sum`` is true (federated item-kNN: the server adds the
users' co-occurrence shares) gets ``Δ̄ · W`` (``W`` the total weight: the number of users
it averaged over, or under user-central DP the expected number), i.e. the sum.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from fedrec.core.arrays import Arrays
from fedrec.core.config.run_config import RunConfig
from fedrec.core.training.cohort import CohortResult

UpdateTransform = Callable[[Arrays], Arrays]


@dataclass(frozen=True)
class ModelParts:
    """The declared split of a family's arrays: global (shipped) and local (kept) names, and shapes."""

    global_names: tuple[str, ...]
    local_names: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]


class ModelFamily(ABC):
    """One kind of recommender, as the round driver and the apps see it."""

    name: str = ""
    models: tuple[str, ...] = ()
    releases_sum: bool = False  # the server adds the users' shares instead of averaging them

    def refusal(self, config: RunConfig) -> str | None:
        """Why this family cannot run ``config`` (an executor, a DP mode, a deployment), or ``None``."""
        return None

    def check(self, config: RunConfig) -> None:
        """``ValueError`` with :meth:`refusal`'s reason when the family cannot run ``config``."""
        reason = self.refusal(config)
        if reason is not None:
            raise ValueError(f"model {config.model} ({self.name} family): {reason}")

    @abstractmethod
    def load_split(self, config: RunConfig) -> Any:
        """The run's split of ``config.dataset`` (cached per process)."""

    @abstractmethod
    def user_data(self, split: Any, user: int, for_evaluation: bool = True) -> Any:
        """User ``user``'s share of ``split``: what its client holds."""

    def evaluated_users(self, split: Any) -> list[int]:
        """The users with held-out data to evaluate."""
        return [int(u) for u in split.evaluated_users()]

    def trainable_users(self, split: Any) -> list[int] | None:
        """The users a round samples from; ``None``: every user (those without data are skipped)."""
        return None

    @abstractmethod
    def parts(self, config: RunConfig, n_items: int) -> ModelParts:
        """The global and local arrays of a one-user model for ``n_items`` items."""

    @abstractmethod
    def initial_global(self, config: RunConfig, split: Any) -> Arrays:
        """The global arrays of round 0 (seeded by ``config.seed``)."""

    def item_tables(self, config: RunConfig, n_items: int) -> frozenset[str]:
        """The global arrays the server learning rate of ``fedavg-slr`` scales (the item tables)."""
        return frozenset()

    @abstractmethod
    def train_users(self, config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                    users: Sequence[Any], server_round: int, device: str | torch.device = "cpu",
                    update_transform: UpdateTransform | None = None) -> CohortResult:
        """Each user's local round from ``global_arrays``; users without training data are skipped."""

    @abstractmethod
    def evaluate_users(self, config: RunConfig, global_arrays: Arrays, stored: Sequence[Arrays | None],
                       users: Sequence[Any], device: str | torch.device = "cpu") -> list[dict[str, float]]:
        """One metrics row per user (the users have held-out data)."""

    def pool(self, rows: list[dict[str, float]]) -> tuple[dict[str, float], float]:
        """A node's metrics from its users' rows, and the weight of the node in the server's mean."""
        from fedrec.core.evaluation.protocols import mean_metrics

        return mean_metrics(rows), float(len(rows))

    def finish(self, metrics: dict[str, float]) -> dict[str, float]:
        """The reported metrics from the server's weighted mean of the nodes' pooled metrics."""
        return metrics


def add_user(result: CohortResult, user: int, update: Arrays, local: Arrays, num_examples: int, loss: float,
             update_transform: UpdateTransform | None = None) -> None:
    """Add one user's round to ``result``: ``n_b Δ_b`` (weight ``n_b``), or ``T(Δ_b)`` (weight 1)."""
    if update_transform is not None:
        update, weight = update_transform(update), 1.0
    else:
        weight = float(num_examples)
    for name, value in update.items():
        result.update_sum[name] += weight * value
    result.weight += weight
    result.users.append(user)
    result.locals.append(local)
    result.num_examples.append(num_examples)
    result.losses.append(loss)
