"""Item features: public catalogue metadata, one float32 row per item.

Feature models (``hybrid``, ``content``) score an item partly or wholly from a feature
vector ``f_i ∈ [0, 1]^F``. Features are public (a film's genres, its year), so every
client may hold the whole matrix; row ``i`` always belongs to dense item ``i`` of the
loaded :class:`~fedrec.core.data.interactions.Interactions`, mapped through
``Interactions.item_ids`` (the raw ids), never by file order.

Sources:

* **ml-100k** (``u.item``): the 19 genre flags of the file (``unknown``, ``Action``, …,
  ``Western``), the release year min-max scaled to ``[0, 1]`` over the films of
  ``u.item`` that have one, and a flag for a missing release date (whose year column is
  0): ``F = 21``.
* **synthetic** (and ``synthetic-<N>[k]``): a noisy one-hot of each item's planted
  cluster. The cluster of item ``i`` is its dominant latent direction with its sign,
  ``c_i = (argmax_k |y_ik|, sign y_ik)`` — one of ``2d`` clusters — and with probability
  ``SYNTHETIC_FEATURE_NOISE`` it is replaced by a uniformly drawn cluster (a generator
  seeded by ``(seed, FEATURE_STREAM)``), so the features inform but do not give away the
  planted factors: ``F = 2d``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedrec.core.data.interactions import Interactions
from fedrec.core.data.loaders import DATASETS, SIZED_SYNTHETIC, is_csv_path, load_dataset
from fedrec.core.data.movielens import find_ml100k_file
from fedrec.core.data.synthetic import SyntheticConfig, planted_item_factors

U_ITEM = "u.item"
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
YEAR = "year"
YEAR_MISSING = "year_missing"
U_ITEM_FIELDS = 5 + len(ML100K_GENRES)  # id|title|release|video release|url|19 flags

SYNTHETIC_FEATURE_NOISE = 0.1
FEATURE_STREAM = 4242  # the synthetic features' own generator stream, apart from the data's


@dataclass(frozen=True)
class ItemFeatures:
    """A feature matrix in the dense item order of one :class:`Interactions`.

    Attributes:
        values: ``(n_items, F)`` float32, finite; row ``i`` describes dense item ``i``.
        names: ``F`` column names.
    """

    values: NDArray[np.float32]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.values.ndim != 2:
            raise ValueError(f"item features must be a (n_items, F) matrix, got shape {self.values.shape}")
        if self.values.dtype != np.float32:
            raise ValueError(f"item features must be float32, got {self.values.dtype}")
        if len(self.names) != self.values.shape[1]:
            raise ValueError(f"{self.values.shape[1]} feature columns but {len(self.names)} names")
        if not np.isfinite(self.values).all():
            raise ValueError("item features contain NaN or infinite values")

    @property
    def n_items(self) -> int:
        return self.values.shape[0]

    @property
    def n_features(self) -> int:
        return self.values.shape[1]


# --- MovieLens 100K ----------------------------------------------------------------


def _parse_year(release: str, path: Path, line_number: int) -> float:
    """The year of a ``01-Jan-1995`` release date; NaN when the field is empty."""
    if not release:
        return float("nan")
    try:
        return float(int(release.rsplit("-", 1)[1]))
    except (IndexError, ValueError) as err:
        raise ValueError(
            f"{path} line {line_number}: expected a release date like 01-Jan-1995, found {release!r}"
        ) from err


def read_u_item(path: Path) -> dict[int, NDArray[np.float32]]:
    """Raw item id → ``(21,)`` features (19 genre flags, scaled year, year-missing flag)."""
    genres: dict[int, list[float]] = {}
    years: dict[int, float] = {}
    # u.item holds a few Latin-1 film titles; only ids, dates and flags are used
    with path.open("r", encoding="latin-1") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("|")
            if len(fields) != U_ITEM_FIELDS:
                raise ValueError(
                    f"{path} line {line_number}: expected {U_ITEM_FIELDS} '|'-separated fields "
                    f"(id, title, release date, video release date, URL, {len(ML100K_GENRES)} genre flags), "
                    f"found {len(fields)}"
                )
            try:
                item = int(fields[0])
                flags = [float(int(flag)) for flag in fields[5:]]
            except ValueError as err:
                raise ValueError(f"{path} line {line_number}: expected an integer id and 0/1 genre flags") from err
            if any(flag not in (0.0, 1.0) for flag in flags):
                raise ValueError(f"{path} line {line_number}: genre flags must be 0 or 1")
            if item in genres:
                raise ValueError(f"{path} line {line_number}: item {item} appears twice")
            genres[item] = flags
            years[item] = _parse_year(fields[2], path, line_number)
    known = np.asarray([y for y in years.values() if not np.isnan(y)])
    if len(known) == 0:
        raise ValueError(f"{path}: no film has a release date, the year cannot be scaled")
    low, span = known.min(), max(known.max() - known.min(), 1.0)
    rows = {}
    for item, flags in genres.items():
        year = years[item]
        missing = np.isnan(year)
        scaled = 0.0 if missing else (year - low) / span
        rows[item] = np.asarray([*flags, scaled, float(missing)], dtype=np.float32)
    return rows


def load_ml100k_item_features(data_dir: str | Path, item_ids: NDArray) -> ItemFeatures:
    """ML-100K features from ``u.item`` (next to ``u.data``), rows in the order of ``item_ids``.

    ``item_ids`` are the raw ids of the dense items (``Interactions.item_ids``).
    """
    path = find_ml100k_file(data_dir).parent / U_ITEM
    if not path.is_file():
        raise FileNotFoundError(
            f"no {U_ITEM} next to the ratings in {path.parent}; "
            "fetch the full data set with `fedrec data download ml-100k --dir DIR`"
        )
    by_id = read_u_item(path)
    absent = [int(i) for i in item_ids if int(i) not in by_id]
    if absent:
        raise ValueError(f"{path}: no features for {len(absent)} rated items, e.g. ids {absent[:5]}")
    values = np.stack([by_id[int(i)] for i in item_ids]) if len(item_ids) else np.zeros((0, len(ML100K_GENRES) + 2))
    return ItemFeatures(values.astype(np.float32), (*ML100K_GENRES, YEAR, YEAR_MISSING))


# --- synthetic ---------------------------------------------------------------------


def synthetic_item_features(
    seed: int, item_ids: NDArray, config: SyntheticConfig = SyntheticConfig()
) -> ItemFeatures:
    """Noisy one-hot planted clusters (module docstring) for the generator's items ``item_ids``."""
    factors = planted_item_factors(seed, config)
    ids = np.asarray(item_ids, dtype=np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= config.n_items):
        raise ValueError(
            f"item ids must be the synthetic generator's 0..{config.n_items - 1}, "
            f"got ids in {ids.min()}..{ids.max()}"
        )
    d = config.latent_dim
    dominant = np.abs(factors).argmax(axis=1)
    negative = factors[np.arange(config.n_items), dominant] < 0
    cluster = 2 * dominant + negative
    rng = np.random.default_rng([seed, FEATURE_STREAM])
    flip = rng.random(config.n_items) < SYNTHETIC_FEATURE_NOISE
    random_cluster = rng.integers(0, 2 * d, size=config.n_items)
    cluster = np.where(flip, random_cluster, cluster)
    one_hot = np.zeros((config.n_items, 2 * d), dtype=np.float32)
    one_hot[np.arange(config.n_items), cluster] = 1.0
    names = tuple(f"cluster_{k}{sign}" for k in range(d) for sign in ("+", "-"))
    return ItemFeatures(one_hot[ids], names)


def _synthetic_config(dataset: str) -> SyntheticConfig | None:
    if dataset == "synthetic":
        return SyntheticConfig()
    sized = SIZED_SYNTHETIC.fullmatch(dataset)
    if sized:
        return SyntheticConfig(n_users=int(sized.group(1)) * (1000 if sized.group(2) else 1))
    return None


# --- by dataset name ---------------------------------------------------------------


def item_features_for(dataset: str, data_dir: str | Path, interactions: Interactions, seed: int) -> ItemFeatures:
    """The features of ``dataset``'s items, rows in the dense order of ``interactions``.

    Args:
        dataset: a name of :func:`fedrec.core.data.loaders.load_dataset`.
        data_dir: folder of data read from disk (``ml-100k``).
        interactions: the loaded dataset; its ``item_ids`` fix the row order.
        seed: the dataset seed (``synthetic``).

    Raises:
        ValueError: for a dataset without item features (a CSV file) or an unknown name.
    """
    if dataset == "ml-100k":
        features = load_ml100k_item_features(data_dir, interactions.item_ids)
    elif (config := _synthetic_config(dataset)) is not None:
        features = synthetic_item_features(seed, interactions.item_ids, config)
    elif is_csv_path(dataset):
        raise ValueError(
            f"dataset {dataset!r} is a CSV of interactions and has no item features; "
            "feature models (hybrid, content) need ml-100k or synthetic"
        )
    else:
        raise ValueError(
            f"no item features for dataset {dataset!r}: choose one of {sorted(DATASETS)} or synthetic-<N>[k]"
        )
    if features.n_items != interactions.n_items:  # guards the row order, not reachable by design
        raise ValueError(f"{features.n_items} feature rows for {interactions.n_items} items")
    return features


def has_item_features(dataset: str) -> bool:
    """Whether :func:`item_features_for` describes ``dataset``'s items (decided by the name alone)."""
    return dataset == "ml-100k" or _synthetic_config(dataset) is not None


@lru_cache(maxsize=4)
def dataset_item_features(dataset: str, data_dir: str = "", seed: int = 0) -> ItemFeatures:
    """:func:`item_features_for` the dataset ``load_dataset(dataset, data_dir, seed)`` returns, once per process.

    The features are public catalogue metadata (``u.item``; the synthetic generator's
    planted clusters); of the loaded interactions only ``item_ids`` is read, which fixes
    the dense order of the rows, so every process that loads the same dataset builds
    the same matrix. The cached object is shared: do not write into ``values``.
    """
    return item_features_for(dataset, data_dir, load_dataset(dataset, data_dir, seed), seed)
