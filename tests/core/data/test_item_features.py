"""Item features (:mod:`fedrec.core.data.item_features`): ML-100K ``u.item``, the synthetic
planted clusters, and the row order that follows ``Interactions.item_ids``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrec.core.data.interactions import Interactions
from fedrec.core.data.item_features import (
    ML100K_GENRES,
    SYNTHETIC_FEATURE_NOISE,
    ItemFeatures,
    item_features_for,
    load_ml100k_item_features,
    read_u_item,
    synthetic_item_features,
)
from fedrec.core.data.synthetic import SyntheticConfig, _planted_factors, generate_synthetic, planted_item_factors

SHARED_ML100K = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ml-100k"
N_FEATURES_ML100K = len(ML100K_GENRES) + 2  # genres, scaled year, year-missing flag


def _flags(*on: int) -> str:
    return "|".join("1" if g in on else "0" for g in range(len(ML100K_GENRES)))


def write_u_item(folder: Path, lines: list[str]) -> Path:
    """A tiny ml-100k folder: ``u.data`` (so the folder is found) and ``u.item``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("1\t10\t5\t1\n")
    (folder / "u.item").write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    return folder


TINY_U_ITEM = [
    f"10|Old (1990)|01-Jan-1990||http://x|{_flags(1, 5)}",
    f"20|Café (2000)|15-Mar-2000||http://x|{_flags(8)}",  # a Latin-1 title
    f"30|unknown||||{_flags(0)}",  # no release date
    f"40|Mid (1995)|01-Jan-1995||http://x|{_flags(15, 16)}",
]


# --- the type ------------------------------------------------------------------------


def test_item_features_validates_its_matrix() -> None:
    ok = ItemFeatures(np.zeros((3, 2), dtype=np.float32), ("a", "b"))
    assert (ok.n_items, ok.n_features) == (3, 2)
    with pytest.raises(ValueError, match="float32"):
        ItemFeatures(np.zeros((3, 2)), ("a", "b"))
    with pytest.raises(ValueError, match="matrix"):
        ItemFeatures(np.zeros(3, dtype=np.float32), ("a",))
    with pytest.raises(ValueError, match="names"):
        ItemFeatures(np.zeros((3, 2), dtype=np.float32), ("a",))
    with pytest.raises(ValueError, match="NaN"):
        ItemFeatures(np.full((1, 1), np.inf, dtype=np.float32), ("a",))


# --- u.item, hand-worked ---------------------------------------------------------------


def test_u_item_rows_are_hand_worked(tmp_path: Path) -> None:
    rows = read_u_item(write_u_item(tmp_path, TINY_U_ITEM) / "u.item")
    assert sorted(rows) == [10, 20, 30, 40]
    # year scaled over 1990..2000; the film with no date gets 0 and the missing flag
    assert rows[10][-2:].tolist() == [0.0, 0.0]
    assert rows[20][-2:].tolist() == [1.0, 0.0]
    assert rows[40][-2:].tolist() == [0.5, 0.0]
    assert rows[30][-2:].tolist() == [0.0, 1.0]
    assert np.flatnonzero(rows[10][:-2]).tolist() == [1, 5]
    assert np.flatnonzero(rows[40][:-2]).tolist() == [15, 16]


def test_rows_follow_the_dense_item_order_not_the_file(tmp_path: Path) -> None:
    folder = write_u_item(tmp_path, TINY_U_ITEM)
    data = Interactions.from_raw([0, 0, 1], [40, 10, 30])  # dense items: 10 → 0, 30 → 1, 40 → 2
    features = load_ml100k_item_features(folder, data.item_ids)
    assert features.values.shape == (3, N_FEATURES_ML100K)
    by_id = read_u_item(folder / "u.item")
    for dense, raw in enumerate(data.item_ids):
        np.testing.assert_array_equal(features.values[dense], by_id[int(raw)])
    assert features.names[-2:] == ("year", "year_missing") and features.names[1] == "Action"


@pytest.mark.parametrize("line, message", [
    ("10|too|few", "line 2: expected 24"),
    (f"x|bad id|01-Jan-1990||u|{_flags()}", "line 2: expected an integer id"),
    (f"11|bad flag|01-Jan-1990||u|{_flags()[:-1]}2", "line 2: genre flags"),
    (f"11|bad date|1990||u|{_flags()}", "line 2: expected a release date"),
    (f"10|twice|01-Jan-1990||u|{_flags()}", "line 2: item 10 appears twice"),
])
def test_u_item_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    folder = write_u_item(tmp_path, [TINY_U_ITEM[0], line])
    with pytest.raises(ValueError, match=message):
        read_u_item(folder / "u.item")


def test_missing_u_item_or_item_rows_are_clear_errors(tmp_path: Path) -> None:
    folder = write_u_item(tmp_path, TINY_U_ITEM)
    with pytest.raises(ValueError, match=r"no features for 1 rated items, e.g. ids \[99\]"):
        load_ml100k_item_features(folder, np.asarray([10, 99]))
    (folder / "u.item").unlink()
    with pytest.raises(FileNotFoundError, match="no u.item"):
        load_ml100k_item_features(folder, np.asarray([10]))


# --- the real ML-100K ----------------------------------------------------------------


def test_ml100k_features() -> None:
    if not (SHARED_ML100K / "u.item").is_file():
        pytest.skip(f"MovieLens 100K is not in {SHARED_ML100K}; fetch it with `fedrec data download ml-100k`")
    from fedrec.core.data.movielens import load_ml100k

    data = load_ml100k(SHARED_ML100K)
    features = item_features_for("ml-100k", SHARED_ML100K, data, seed=0)
    assert features.values.shape == (1682, 21) and features.values.dtype == np.float32
    genres = features.values[:, : len(ML100K_GENRES)]
    assert set(np.unique(genres).tolist()) == {0.0, 1.0}
    assert (genres.sum(axis=1) >= 1).mean() > 0.99  # every film has a genre (or 'unknown')
    year, missing = features.values[:, -2], features.values[:, -1]
    assert year.min() == 0.0 and year.max() == 1.0
    assert missing.sum() == 1 and data.item_ids[np.flatnonzero(missing)].tolist() == [267]
    # Toy Story (raw id 1): Animation, Children's, Comedy; 1995 in 1922..1998
    toy_story = features.values[int(np.flatnonzero(data.item_ids == 1)[0])]
    assert [features.names[g] for g in np.flatnonzero(toy_story[:19])] == ["Animation", "Children's", "Comedy"]
    assert toy_story[19] == pytest.approx((1995 - 1922) / (1998 - 1922))


# --- synthetic -------------------------------------------------------------------------


def test_planted_item_factors_are_the_ones_the_ratings_come_from() -> None:
    """Replaying the generator: every rating is ``clip(round(3 + 1.5 z), 1, 5)`` of the
    standardised affinity ``z`` of ``<x_u, y_i>`` with the replayed factors."""
    config = SyntheticConfig(n_users=60, n_items=40, max_items=20, median_items=10)
    data = generate_synthetic(5, config)
    users, items = _planted_factors(np.random.default_rng(5), config)
    np.testing.assert_array_equal(items, planted_item_factors(5, config))
    affinity = users @ items.T
    z = (affinity - affinity.mean()) / affinity.std()
    raw_users, raw_items = data.user_ids[data.users], data.item_ids[data.items]
    expected = np.clip(np.round(3.0 + 1.5 * z[raw_users, raw_items]), 1, 5)
    np.testing.assert_array_equal(data.ratings, expected)


def test_synthetic_features_are_a_deterministic_noisy_one_hot_of_the_planted_cluster() -> None:
    data = generate_synthetic(0)
    features = item_features_for("synthetic", "", data, seed=0)
    again = item_features_for("synthetic", "", data, seed=0)
    d = SyntheticConfig().latent_dim
    assert features.values.shape == (data.n_items, 2 * d) and features.names[:2] == ("cluster_0+", "cluster_0-")
    np.testing.assert_array_equal(features.values, again.values)
    assert np.all(features.values.sum(axis=1) == 1)
    factors = planted_item_factors(0)[data.item_ids]
    dominant = np.abs(factors).argmax(axis=1)
    planted = 2 * dominant + (factors[np.arange(len(factors)), dominant] < 0)
    agree = (features.values.argmax(axis=1) == planted).mean()
    # a flipped item lands on its own cluster 1 time in 2d
    expected = 1 - SYNTHETIC_FEATURE_NOISE * (1 - 1 / (2 * d))
    assert abs(agree - expected) < 0.05


def test_synthetic_features_follow_the_dense_item_order() -> None:
    subset = Interactions.from_raw([0, 1, 1], [7, 3, 450])
    features = synthetic_item_features(2, subset.item_ids)
    full = synthetic_item_features(2, np.arange(500))
    np.testing.assert_array_equal(features.values, full.values[[3, 7, 450]])
    with pytest.raises(ValueError, match="0..499"):
        synthetic_item_features(2, np.asarray([500]))


def test_synthetic_features_inform_about_the_planted_taste() -> None:
    """Items sharing a feature have more similar planted factors than items that do not."""
    factors = planted_item_factors(1)
    features = synthetic_item_features(1, np.arange(500)).values
    unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    cosine = unit @ unit.T
    same = features @ features.T > 0
    off_diagonal = ~np.eye(500, dtype=bool)
    assert cosine[same & off_diagonal].mean() > cosine[~same].mean() + 0.3


def test_sized_synthetic_has_features_too() -> None:
    config = SyntheticConfig(n_users=2000)
    data = generate_synthetic(0, config)
    features = item_features_for("synthetic-2k", "", data, seed=0)
    np.testing.assert_array_equal(features.values, synthetic_item_features(0, data.item_ids, config).values)
    # the item factors come after the user factors in the generator: they depend on n_users
    assert not np.array_equal(features.values, synthetic_item_features(0, data.item_ids).values)


def test_datasets_without_features_are_refused(tmp_path: Path) -> None:
    data = Interactions.from_raw([0], [0])
    with pytest.raises(ValueError, match="CSV of interactions and has no item features"):
        item_features_for(str(tmp_path / "ratings.csv"), "", data, seed=0)
    with pytest.raises(ValueError, match="no item features for dataset 'nope'"):
        item_features_for("nope", "", data, seed=0)
