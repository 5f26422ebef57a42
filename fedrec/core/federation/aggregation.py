"""Server-side aggregation math over updates of the global part (pure functions).

Clients reply with updates ``Δ_k = x_k − x`` weighted by their number of examples
``n_k``. The server forms the weighted mean ``Δ̄ = Σ_k n_k Δ_k / Σ_k n_k`` and feeds
``Δ̄`` as a pseudo-gradient to a server optimiser (FedOpt, Reddi et al. ICLR 2021):

* ``fedavg``:     ``x ← x + Δ̄`` (McMahan et al. 2017);
* ``fedavg-slr``: ``x ← x + η_s Δ̄`` on the item tables (the parameters named in
  ``scaled``), ``x ← x + Δ̄`` on the rest — FedAvg with a server learning rate ``η_s``
  where updates are diluted;
* ``fedadam``:    ``m ← β1 m + (1−β1) Δ̄``, ``v ← β2 v + (1−β2) Δ̄²``,
  ``x ← x + η_s m / (√v + τ)``.

Why a server learning rate: a client touches the rows of the items it trained on
(its positives and sampled negatives), a small share of the catalogue, so in the
plain mean each item row's update is diluted by the share of clients that touched
it. ``η_s`` > 1 restores the step size per row without looking at which rows a
client touched (averaging each row only over the clients that touched it would be
stronger, but it reveals those rows, so it cannot be used with DP). Dense layers (MLP,
output) are moved by every client, are not diluted, and overshoot when scaled, so they
keep ``η = 1``; which tables are item tables is declared by the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedrec.core.arrays import Arrays


def weighted_mean(updates: list[Arrays], weights: list[float]) -> Arrays:
    """``Σ_k w_k Δ_k / Σ_k w_k``; keys and shapes must agree across updates."""
    if not updates:
        raise ValueError("no updates to average")
    if len(updates) != len(weights):
        raise ValueError("one weight per update is required")
    total = float(sum(weights))
    if not total > 0:
        raise ValueError("the weights sum to zero: no client trained on any example")
    keys = list(updates[0])
    mean: Arrays = {}
    for key in keys:
        acc = np.zeros_like(updates[0][key], dtype=np.float64)
        for update, weight in zip(updates, weights):
            if set(update) != set(keys) or update[key].shape != acc.shape:
                raise ValueError(f"update for {key!r} does not match the others in keys or shape")
            acc += weight * update[key]
        mean[key] = (acc / total).astype(np.float32)
    return mean


@dataclass
class ServerOptimizer:
    """Applies the mean update to the global arrays; keeps its state for checkpoints."""

    kind: str = "fedavg"
    lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    scaled: frozenset[str] | None = None  # fedavg-slr: parameters that get η_s (None: all)
    state: dict[str, Arrays] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("fedavg", "fedavg-slr", "fedadam"):
            raise ValueError(f"unknown server optimiser {self.kind!r}")
        if self.kind == "fedavg":
            self.lr = 1.0

    def lr_of(self, name: str) -> float:
        """Server learning rate of one parameter (FedAvg/FedAvg-SLR)."""
        return self.lr if self.scaled is None or name in self.scaled else 1.0

    def step(self, global_arrays: Arrays, mean_update: Arrays) -> Arrays:
        if set(global_arrays) != set(mean_update):
            raise ValueError("the mean update and the global model have different keys")
        if self.kind != "fedadam":
            return {k: (v + self.lr_of(k) * mean_update[k]).astype(np.float32) for k, v in global_arrays.items()}
        m = self.state.setdefault("m", {k: np.zeros_like(v) for k, v in global_arrays.items()})
        v2 = self.state.setdefault("v", {k: np.zeros_like(v) for k, v in global_arrays.items()})
        new = {}
        for k, x in global_arrays.items():
            m[k] = self.beta1 * m[k] + (1 - self.beta1) * mean_update[k]
            v2[k] = self.beta2 * v2[k] + (1 - self.beta2) * mean_update[k] ** 2
            new[k] = (x + self.lr * m[k] / (np.sqrt(v2[k]) + self.tau)).astype(np.float32)
        return new
