"""Turn a dataset into what a deployment has: an item catalogue and one CSV per device.

``fedrec data export`` writes ``DIR/items.txt`` (the catalogue: raw item ids, one per
line, in item-row order) and ``DIR/client-K.csv`` for ``K = 0..clients-1`` with the
interactions of the users dealt to device ``K`` round-robin (user ``u`` to ``u mod
clients``, the simulation's partition), as ``user,item,rating,timestamp`` (rating 1 and
the row's position as timestamp when the dataset has none). For trying a deployment on
one machine or a few; real devices hold their own data.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fedrec.core.data.interactions import Interactions

CATALOGUE_FILE = "items.txt"


def client_file(directory: Path, index: int) -> Path:
    return Path(directory) / f"client-{index}.csv"


def export_for_devices(data: Interactions, clients: int, directory: Path, force: bool = False) -> list[Path]:
    """Write the catalogue and ``clients`` CSV files; returns the CSV paths."""
    if clients < 1 or clients > data.n_users:
        raise ValueError(f"clients must be in 1..{data.n_users} (the number of users), got {clients}")
    directory = Path(directory)
    targets = [directory / CATALOGUE_FILE] + [client_file(directory, k) for k in range(clients)]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{existing[0]} exists (and {len(existing) - 1} more); pass --force to overwrite")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CATALOGUE_FILE).write_text("".join(f"{item}\n" for item in data.item_ids))
    ratings = data.ratings if data.ratings is not None else np.ones(len(data), dtype=np.float32)
    times = data.timestamps if data.timestamps is not None else np.arange(len(data), dtype=np.int64)
    paths = []
    for k in range(clients):
        rows = np.flatnonzero(data.users % clients == k)
        path = client_file(directory, k)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["user", "item", "rating", "timestamp"])
            for row in rows:
                writer.writerow([data.user_ids[data.users[row]], data.item_ids[data.items[row]],
                                 f"{float(ratings[row]):g}", int(times[row])])
        paths.append(path)
    return paths
