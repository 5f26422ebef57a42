"""The item catalogue of a deployment: the public list of raw item ids, in item-row order.

Row ``i`` of every item table of the global model is item ``catalogue[i]``. The server
reads it from a file (``fedrec server run --catalogue items.txt``, one id per line) and
sends it with every instruction; devices map their CSV's item ids through it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def catalogue_digest(catalogue: tuple[str, ...]) -> str:
    """SHA-256 of the catalogue (one id per line): names a catalogue in the device state."""
    return hashlib.sha256("\n".join(catalogue).encode("utf-8")).hexdigest()


def read_catalogue(path: str | Path) -> tuple[str, ...]:
    """A catalogue file: one raw item id per line, in item-row order, no duplicates."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"item catalogue not found: {path}")
    items = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not items:
        raise ValueError(f"{path}: the catalogue lists no items")
    if len(set(items)) != len(items):
        raise ValueError(f"{path}: the catalogue lists an item more than once")
    return items
