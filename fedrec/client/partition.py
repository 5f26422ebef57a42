"""Which users a node holds: one client per user, derived from the node config.

In simulation Flower gives each node ``partition-id`` and ``num-partitions``. Users
are dealt round-robin: node ``p`` holds users ``{u : u mod P = p}``. With one node
per user (``P = n_users``, what ``fedrec simulate`` launches) each node is exactly one
user, the natural partition of a recommender; with fewer nodes a node stands for a
site holding several users, each with its own private vector.
"""

from __future__ import annotations

from typing import Any, Mapping

from fedrec.core.config.run_config import RunConfig
from fedrec.core.families.registry import family_of

PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"


def node_users(node_config: Mapping[str, object], n_users: int) -> list[int]:
    """Dense ids of the users held by the node with this node config."""
    try:
        partition = int(node_config[PARTITION_ID])  # type: ignore[arg-type]
        partitions = int(node_config[NUM_PARTITIONS])  # type: ignore[arg-type]
    except KeyError as err:
        raise KeyError(
            f"node config lacks {err}: a simulated node needs partition-id and num-partitions"
        ) from err
    if not 0 <= partition < partitions:
        raise ValueError(f"partition-id {partition} outside 0..{partitions - 1}")
    return list(range(partition, n_users, partitions))


def split_for(config: RunConfig) -> Any:
    """The split ``config.model``'s family trains on (built once per process)."""
    return family_of(config.model).load_split(config)

