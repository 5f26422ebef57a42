"""Server strategies (one algorithm per module)."""

from fedrec.server.strategy.fedopt_updates import FedOptOnUpdates

__all__ = ["FedOptOnUpdates"]
