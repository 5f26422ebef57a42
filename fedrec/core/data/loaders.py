"""One registry of datasets, picked by name (or by a path to a CSV file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

from fedrec.core.data.csv_file import load_csv
from fedrec.core.data.interactions import Interactions
from fedrec.core.data.movielens import load_ml100k
from fedrec.core.data.synthetic import generate_synthetic

DATASETS: dict[str, Callable[[str, int], Interactions]] = {
    "synthetic": lambda data_dir, seed: generate_synthetic(seed),
    "ml-100k": lambda data_dir, seed: load_ml100k(data_dir),
}


def is_csv_path(name: str) -> bool:
    """A dataset name that ends in ``.csv`` or names an existing file is a CSV path."""
    return name.lower().endswith(".csv") or Path(name).expanduser().is_file()


@lru_cache(maxsize=4)
def load_dataset(name: str, data_dir: str = "", seed: int = 0) -> Interactions:
    """Load a dataset by registry name or CSV path (cached per process).

    Args:
        name: ``synthetic``, ``ml-100k`` or a path to a CSV file.
        data_dir: folder for datasets read from disk (``ml-100k``).
        seed: seed of generated datasets (``synthetic``).
    """
    if name in DATASETS:
        return DATASETS[name](data_dir, seed)
    if is_csv_path(name):
        return load_csv(name)
    raise ValueError(
        f"unknown dataset {name!r}: choose one of {sorted(DATASETS)} or a path to a .csv file"
    )
