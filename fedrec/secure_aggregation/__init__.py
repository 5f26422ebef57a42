"""SecAgg+ (Bell et al. 2020) as transport-free state machines.

:class:`SecAggServer` and :class:`SecAggClient` exchange plain dicts in four stages
(setup, share keys, collect masked vectors, unmask); a ServerApp drives them over
``grid.send_and_receive`` and a ClientApp answers with one client object per round. The
inputs are integer vectors in Z_m (m = 2^b); the server learns only the modular sum of the
survivors' inputs. Built on Flower's key agreement, Fernet and Shamir primitives
(``flwr.common.secure_aggregation``); the mask PRG is ChaCha20 (see :mod:`.masks`).
"""

from .client import SecAggClient
from .config import SecAggConfig
from .errors import ProtocolViolation, RoundCannotBeUnmasked, UnmaskRequestRefused
from .in_process import RoundResult, run_round
from .server import SecAggServer

__all__ = [
    "ProtocolViolation",
    "RoundCannotBeUnmasked",
    "RoundResult",
    "SecAggClient",
    "SecAggConfig",
    "SecAggServer",
    "UnmaskRequestRefused",
    "run_round",
]
