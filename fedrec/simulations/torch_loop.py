"""The federated arithmetic of ``fedrec simulate`` in one plain Python loop (no Flower, no Ray).

:func:`run_torch_loop` is the round driver (:func:`fedrec.core.federation.driver.run_federation`)
returning its rows: every round samples the users as the server does for the cohort
executor, trains them with the very functions the ClientApp calls (the configured
executor's, with the same per-user seeds), combines the updates and steps the server
optimiser; evaluation runs the family's evaluation for every user with held-out data.
Its wall time is the floor that the simulation's overhead is measured against. Under a
DP mode the rows carry ``epsilon_max`` and ``dp_refused`` and an exact evaluation
(``"evaluation": "exact (harness)"``), see :mod:`fedrec.core.federation.private_rounds`.
"""

from __future__ import annotations

from typing import Any

from fedrec.core.config.run_config import RunConfig
from fedrec.core.federation.driver import run_federation


def run_torch_loop(split: Any, config: RunConfig, threads: int = 1, evaluate: bool = True,
                   partitions: int = 1) -> list[dict[str, Any]]:
    """One row per round of :func:`~fedrec.core.federation.driver.run_federation` on ``split``."""
    return run_federation(config, split, threads=threads, evaluate=evaluate, partitions=partitions).rows
