"""One check for arrays that cross the wire: the expected names, shapes, dtype, finite values.

The ClientApp runs it on the global model it receives (and refuses a bad one); the
server's strategy runs it on every update (and drops a bad one with the reason).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def array_problem(arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]],
                  dtype: np.dtype | type | None = None) -> str | None:
    """Why ``arrays`` do not match ``shapes`` (names and shapes), ``dtype`` (when given) or are
    not finite; None if fine."""
    if set(arrays) != set(shapes):
        return f"arrays {sorted(arrays)} differ from the expected {sorted(shapes)}"
    for name, value in arrays.items():
        if tuple(value.shape) != tuple(shapes[name]):
            return f"{name!r} has shape {tuple(value.shape)}, expected {tuple(shapes[name])}"
        if dtype is not None and value.dtype != np.dtype(dtype):
            return f"{name!r} has dtype {value.dtype}, expected {np.dtype(dtype)}"
        if not np.all(np.isfinite(value)):
            return f"{name!r} holds NaN or infinite values"
    return None
