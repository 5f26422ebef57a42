"""The deployment section of the run config: what a server run waits for and keeps.

:class:`DeploymentConfig` holds the run-config keys of ``fedrec server run`` (the item
catalogue file, the devices and valid updates a round needs, how long it waits) and how
often a run checkpoints, and checks them once, when it is built.
:class:`~fedrec.core.config.run_config.RunConfig` builds it from its flat fields
(``config.deployment``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeploymentConfig:
    """Where and how a run is deployed (the run-config keys are the names with ``-``).

    ``catalogue``: the item catalogue file on the server (one raw item id per line; empty
    in simulation). ``min_nodes``: the fewest connected nodes a round waits for.
    ``min_valid_updates``: the fewest valid updates a round needs to be aggregated (fewer:
    the round is skipped). ``round_timeout``: seconds a round waits for replies.
    ``checkpoint_every``: checkpoint every N rounds (a restarted server resumes there).
    """

    catalogue: str = ""
    min_nodes: int = 1
    min_valid_updates: int = 1
    round_timeout: float = 3600.0
    checkpoint_every: int = 5

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint-every must be ≥ 1, got {self.checkpoint_every}")
        if self.min_nodes < 1 or self.min_valid_updates < 1:
            raise ValueError(f"min-nodes and min-valid-updates must be ≥ 1, got {self.min_nodes}, "
                             f"{self.min_valid_updates}")


DEPLOYMENT_DEFAULTS = DeploymentConfig()
