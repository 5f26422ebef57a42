"""Which torch device local training runs on: ``cpu``, ``cuda`` or ``auto``."""

from __future__ import annotations

import torch

# defined, torch-free, with the run config; re-exported here
from fedrec.core.config.choices import DEVICES


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when this process sees a GPU, else the CPU; ``cuda`` without one is an error."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}: choose one of {DEVICES}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but this process sees no CUDA GPU")
    return torch.device("cuda")
