"""One registry of datasets, picked by name (or by a path to a CSV file)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Callable

from fedrec.core.data.csv_file import load_csv
from fedrec.core.data.interactions import Interactions
from fedrec.core.data.movielens import load_ml100k
from fedrec.core.data.synthetic import SyntheticConfig, generate_synthetic

DATASETS: dict[str, Callable[[str, int], Interactions]] = {
    "synthetic": lambda data_dir, seed: generate_synthetic(seed),
    "ml-100k": lambda data_dir, seed: load_ml100k(data_dir),
}


# ``synthetic-<N>`` or ``synthetic-<N>k``: the synthetic generator with N (thousand) users
# and the default catalogue, for scaling benchmarks (``synthetic-100k``).
SIZED_SYNTHETIC = re.compile(r"synthetic-(\d+)(k?)")


def is_csv_path(name: str) -> bool:
    """A dataset name that ends in ``.csv`` or names an existing file is a CSV path."""
    return name.lower().endswith(".csv") or Path(name).expanduser().is_file()


@lru_cache(maxsize=4)
def load_dataset(name: str, data_dir: str = "", seed: int = 0) -> Interactions:
    """Load a dataset by registry name or CSV path (cached per process).

    Args:
        name: ``synthetic``, ``synthetic-<N>[k]`` (N (thousand) users), ``ml-100k`` or a
            path to a CSV file.
        data_dir: folder for datasets read from disk (``ml-100k``).
        seed: seed of generated datasets (``synthetic``).
    """
    if name in DATASETS:
        return DATASETS[name](data_dir, seed)
    sized = SIZED_SYNTHETIC.fullmatch(name)
    if sized:
        n_users = int(sized.group(1)) * (1000 if sized.group(2) else 1)
        if n_users < 1:
            raise ValueError(f"{name!r}: a synthetic dataset needs at least one user")
        return generate_synthetic(seed, SyntheticConfig(n_users=n_users))
    if is_csv_path(name):
        return load_csv(name)
    raise ValueError(
        f"unknown dataset {name!r}: choose one of {sorted(DATASETS)}, synthetic-<N>[k] or a path to a .csv file"
    )
