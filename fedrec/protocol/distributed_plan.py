"""What the ServerApp and every ClientApp derive alike for ``dp user-distributed`` over Flower.

Both sides compute the run's DDG plan (:func:`flower_run_plan`) from the run config and
public sizes (simulation: the number of nodes, one per user; deployment: ``min-nodes``,
the devices every round samples), so a client never takes γ, σ_share or the modulus from the server: a server
that asked for less noise would have to change the run config every client reads.
:func:`secagg_config` gives the SecAgg+ parameters of a round of ``n`` sampled nodes.

SecAgg+ parameters (public, fixed here):

* graph degree ``k = n − 1`` (the complete graph, Bonawitz et al.'s SecAgg) up to
  :data:`MAX_DEGREE` neighbours, else ``k = MAX_DEGREE`` (even: a random ring-lattice,
  Bell et al.'s SecAgg+); a share group has ``g = min(k, n − 1) + 1`` members;
* threshold ``t = ⌊g/2⌋ + 1``, the smallest strict majority: each group survives
  ``g − t`` dropouts, and no two disjoint sets of its members can both reach ``t``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fedrec.core.arrays import Arrays
from fedrec.core.privacy.distributed_mode import RunPlan, run_plan
from fedrec.secure_aggregation.config import SecAggConfig

if TYPE_CHECKING:
    from fedrec.core.config.run_config import RunConfig

MAX_DEGREE = 32


def clients_per_round(config: RunConfig, n_nodes: int, deployed: bool = False) -> int:
    """``n``: the nodes a round samples (every sampled node is one user): simulated,
    ``clients-per-round`` of the ``n_nodes``; deployed, ``min-nodes`` of the connected devices."""
    if deployed:
        return int(config.min_nodes)
    return min(int(config.clients_per_round), int(n_nodes))


def flower_run_plan(config: RunConfig, global_arrays: Arrays, n_nodes: int, deployed: bool = False) -> RunPlan:
    """The run's plan (:func:`fedrec.core.privacy.distributed_mode.run_plan`) for updates of
    the global arrays' size, ``n`` = :func:`clients_per_round` clients a round and (simulated)
    ``n_nodes`` units, one user per node; deployed, the units are counted as ``min-nodes``
    (a device cannot know how many others exist; with ``--epsilon`` the plan does not depend
    on the units). ``ValueError`` when no plan fits."""
    dim = sum(int(np.size(value)) for value in global_arrays.values())
    n = clients_per_round(config, n_nodes, deployed)
    return run_plan(config, dim, n, n if deployed else int(n_nodes))


def secagg_config(run: RunPlan, n_sampled: int) -> SecAggConfig:
    """The SecAgg+ parameters of a round over ``n_sampled`` nodes whose inputs are ``run``'s encodings."""
    degree = n_sampled - 1 if n_sampled - 1 <= MAX_DEGREE else MAX_DEGREE
    group = min(degree, n_sampled - 1) + 1
    return SecAggConfig(num_clients=int(n_sampled), neighbourhood_size=degree, threshold=group // 2 + 1,
                        modulus_bits=run.quantiser.bits, vector_length=run.quantiser.encoded_dim)
