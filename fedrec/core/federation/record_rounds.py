"""``dp record-distributed`` in the round driver: the run's plan, its rounds and its ε.

Each round takes the ``clients-per-round`` users the driver samples (their number is
public), runs :func:`fedrec.core.privacy.record_distributed.record_round` over every
training record of each (emulating secure aggregation: only the modular sum reaches the
server), and steps the shared part with ``Δ = −lr·(noised sum)/n`` through the server
optimiser (so ``server-lr`` scales it as it scales the other modes' mean updates). Each
user's local parameters move on its device with ``lr`` and the device's own noise.

Accounting (:class:`~fedrec.core.privacy.record_distributed.RecordPlan`): zCDP, every
round ``ρ``, every evaluation release ``1/(2σ_e²)`` (the apps' evaluation noise,
:func:`fedrec.core.privacy.plan.eval_noise`), ε by CKS20's conversion. The plan is sized
for ``rounds`` rounds and the run's evaluation rounds, so a run that does what it planned
ends at ε ≤ the budget; a round past the plan is not run. Every release gets a ledger row
(:mod:`fedrec.core.privacy.record_ledger`), kept in :attr:`RecordRounds.ledger_entries`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedrec.core.arrays import Arrays
from fedrec.core.config.run_config import RunConfig
from fedrec.core.families.base import ModelFamily
from fedrec.core.models.run_model import build_run_model, run_item_features
from fedrec.core.privacy import plan as gaussian_plan
from fedrec.core.privacy.distributed_mode import min_clients
from fedrec.core.privacy.ledger_rows import LedgerEntry
from fedrec.core.privacy.record_distributed import (
    RecordPlan,
    layout_of,
    plan_records,
    record_round,
)
from fedrec.core.privacy.record_ledger import ledger_entries
from fedrec.core.privacy.secure_random import secure_generator
from fedrec.core.training.local_round import new_local_parameters

# Why the Flower apps refuse the mode (said once, here).
FLOWER_REFUSAL = ("dp record-distributed runs in the round driver only so far (fedrec.core.federation.driver."
                  "run_federation, e.g. python -m fedrec.simulations.benchmarks.record_dp): its client and server "
                  "sides over Flower's SecAgg+ are not built yet")


class RecordRounds:
    """The rounds of one ``record-distributed`` run in the driver."""

    def __init__(self, config: RunConfig, family: ModelFamily, split: Any, arrays: Arrays) -> None:
        from fedrec.core.federation.driver import round_users

        self.config = config
        self.family = family
        self.model = build_run_model(config, 1, split.n_items)
        self.buffers = {name: buffer for name, buffer in self.model.named_buffers()
                        if name in self.model.item_buffer_names}
        n_clients = len(round_users(family, split, config, 1))
        self.plan: RecordPlan = plan_records(
            target_epsilon=config.epsilon, delta=config.delta, rounds=config.rounds, n_clients=n_clients,
            n_min=min_clients(config, n_clients), clip=config.clip,
            layout=layout_of(self.model, arrays, config.negatives), bits=config.ddg_bits,
            wrap_target=config.ddg_wrap_probability,
            eval_noise_multiplier=gaussian_plan.eval_noise(config, split.n_users),
            eval_releases=gaussian_plan.evaluation_rounds(config))
        self.features = run_item_features(config)
        self.rounds_done = self.evaluations_done = 0
        # the server's ledger rows (train and evaluation releases), in order; kept in memory
        self.ledger_entries: list[LedgerEntry] = []
        self.run_id = f"driver-{config.seed}"

    def round_allowed(self) -> bool:
        return self.rounds_done < self.plan.rounds

    def round(self, split: Any, arrays: Arrays, local: dict[int, Arrays], optimizer: Any,
              server_round: int) -> tuple[Arrays, dict[str, Any]]:
        """One round: every record of the sampled users, one step of the shared and local parts."""
        from fedrec.core.federation.driver import round_users

        config = self.config
        users = round_users(self.family, split, config, server_round)
        for u in users:
            if u not in local:
                local[u] = new_local_parameters(config.model, split.n_items, config.dim, config.seed, u,
                                                item_features=self.features, personal=config.personal)
        names = sorted(local[users[0]])
        stacked = {n: torch.from_numpy(np.stack([local[u][n] for u in users]).astype(np.float32)) for n in names}
        records = [np.asarray(self.family.user_data(split, u, for_evaluation=False).train_items, dtype=np.int64)
                   for u in users]
        out = record_round(self.model, self.plan, arrays, stacked, records, config.loss, config.lr,
                           secure_generator(), self.buffers)
        for j, u in enumerate(users):
            local[u] = {n: out.local[n][j].numpy().copy() for n in names}
        delta = {n: (-config.lr * out.shared_sum[n] / len(users)).astype(np.float32) for n in arrays}
        arrays = optimizer.step(arrays, delta)
        self.rounds_done += 1  # the row carries no count of records: that is the data's
        self.ledger_entries += ledger_entries(self.plan, self.run_id, server_round, self.rounds_done,
                                              self.evaluations_done)
        return arrays, {"round": server_round, "clients": len(users), "dp_refused": 0,
                        "epsilon_max": self.plan.epsilon(self.rounds_done, self.evaluations_done),
                        "train_loss": None, "clip": config.clip, "record_ddg": self.plan.parameters()}

    def count_evaluation(self) -> float:
        """One evaluation release accounted (and its ledger row); ε so far."""
        self.evaluations_done += 1
        self.ledger_entries += ledger_entries(self.plan, self.run_id, self.rounds_done, self.rounds_done,
                                              self.evaluations_done, "evaluate",
                                              gaussian_plan.eval_sensitivity(self.config.evaluation))
        return self.plan.epsilon(self.rounds_done, self.evaluations_done)
