"""The one representation of named parameters, and the one conversion from torch.

``Arrays`` maps a parameter name to a float32 numpy array; it is what a client sends,
what the server aggregates and what a checkpoint stores. ``Tensors`` is the same
mapping over torch tensors, used inside training.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

Arrays = dict[str, NDArray[np.float32]]
Tensors = dict[str, torch.Tensor]


def to_numpy(state: Tensors) -> Arrays:
    """Detached float32 copies of ``state`` (safe to keep after the tensors change)."""
    return {name: tensor.detach().cpu().numpy().astype(np.float32, copy=True) for name, tensor in state.items()}
