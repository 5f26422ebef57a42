"""personal=tune: before scoring, a user fine-tunes a private copy of the global part (with its
local part) on its own training items; the received global part never changes, and the
vectorised evaluation (cohort_metrics) scores each user exactly as user_metrics does."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.split import UserData
from fedrec.core.families.implicit import ImplicitFamily, run_split
from fedrec.core.training.cohort_evaluation import cohort_metrics
from fedrec.core.training.local_round import user_metrics, user_round, user_scores

DATASET = "synthetic-20"  # 20 users, 8 or more training items each, every one with a validation item


def _config(model: str, personal: str = "tune", **settings: object) -> RunConfig:
    base = dict(model=model, dataset=DATASET, dim=8, batch_size=8, personal=personal, tune_epochs=1, eval_k=5,
                reconstruct_epochs=1, client_optimizer="adam", lr=0.05, local_epochs=1)
    return RunConfig(**{**base, **settings})


def _trained_global(config: RunConfig):
    """The global part after one plain round of every user (so the item tables are not the initial ones)."""
    family = ImplicitFamily()
    split = run_split(config)
    arrays = family.initial_global(config, split)
    users = [split.user_data(u, for_evaluation=False) for u in range(split.n_users)]
    result = family.train_users(config, arrays, [None] * len(users), users, 1)
    mean = result.mean_update
    return split, {k: (v + 5.0 * mean[k]).astype(np.float32) for k, v in arrays.items()}, result


def _scores(config: RunConfig, arrays, local, user: UserData, **overrides: object):
    settings = dict(personal=config.personal, tune_epochs=config.tune_epochs, tuning=config.tuning)
    settings.update(overrides)
    return user_scores(config.model, config.dim, arrays, local, user, config.training, config.reconstruct_epochs,
                       config.seed, **settings)


@pytest.mark.parametrize("model", ["mf", "gmf"])
def test_tuning_changes_the_scores_and_leaves_the_received_global_part_alone(model: str) -> None:
    config = _config(model)
    split, arrays, _ = _trained_global(config)
    user = split.user_data(3)
    assert len(user.train_items) > 0
    before = {k: v.copy() for k, v in arrays.items()}
    tuned = _scores(config, arrays, None, user)
    for name, value in before.items():
        np.testing.assert_array_equal(arrays[name], value)
    plain = _scores(config, arrays, None, user, personal="none")
    assert tuned.shape == plain.shape == (split.n_items,)
    assert np.max(np.abs(tuned - plain)) > 1e-3
    # tuning trains on the user's items: its positives rise against the catalogue on average
    positives = np.zeros(split.n_items, dtype=bool)
    positives[user.train_items] = True
    gain = (tuned - plain)
    assert gain[positives].mean() > gain[~positives].mean()
    # deterministic: the tuning generator is seeded by (seed, user, 37)
    np.testing.assert_array_equal(_scores(config, arrays, None, user), tuned)
    # no tuning epochs, or an option without tune: the untuned scores, exactly
    np.testing.assert_array_equal(_scores(config, arrays, None, user, tune_epochs=0), plain)
    np.testing.assert_array_equal(_scores(config, arrays, None, user, personal="none", tune_epochs=3), plain)
    # more epochs move further
    two = _scores(config, arrays, None, user, tune_epochs=2)
    assert np.max(np.abs(two - tuned)) > 1e-4


def test_tune_lr_is_the_post_tuning_rate_and_zero_means_the_clients() -> None:
    config = _config("mf")
    split, arrays, _ = _trained_global(config)
    user = split.user_data(5)
    default = _scores(config, arrays, None, user)
    same = replace(config, tune_lr=config.lr)
    np.testing.assert_array_equal(_scores(same, arrays, None, user), default)
    slow = replace(config, tune_lr=config.lr / 100)
    plain = _scores(config, arrays, None, user, personal="none")
    slow_scores = _scores(slow, arrays, None, user)
    assert 0 < np.max(np.abs(slow_scores - plain)) < np.max(np.abs(default - plain))
    assert user_metrics(slow, arrays, None, user).keys() == user_metrics(config, arrays, None, user).keys()


def _stored_mix(config: RunConfig, arrays, users: list[UserData]) -> list:
    """Every other user with locals from an earlier round, the rest fresh."""
    return [user_round(config, arrays, None, u, 1).local if i % 2 else None for i, u in enumerate(users)]


def _assert_rows_equal(reference: list[dict[str, float]], rows: list[dict[str, float]]) -> None:
    assert len(rows) == len(reference)
    for ref, row in zip(reference, rows):
        assert set(row) == set(ref)
        for key in ref:
            assert row[key] == pytest.approx(ref[key], abs=1e-6), key


@pytest.mark.parametrize("model, personal, weight_decay", [
    ("mf", "tune", 0.0),  # compact rows: each user carries the item rows its batches touch
    ("mf", "tune", 0.01),  # weight decay moves every row: full copies
    ("gmf", "tune", 0.0),
    ("gmf", "tune", 0.01),
    ("gmf", "head+tune", 0.0),
    ("gmf", "head+tune", 0.01),
])
def test_cohort_metrics_tune_each_user_as_user_metrics_does(model: str, personal: str, weight_decay: float) -> None:
    config = _config(model, personal, weight_decay=weight_decay, model_selection="best-validation")
    split, arrays, _ = _trained_global(config)
    users = [split.user_data(u) for u in range(split.n_users)]
    stored = _stored_mix(config, arrays, users)
    reference = [user_metrics(config, arrays, s, u) for s, u in zip(stored, users)]
    rows = cohort_metrics(config, arrays, stored, users)
    _assert_rows_equal(reference, rows)
    assert all("val_hr@5" in row for row in rows)
    # tuning makes a difference to the metrics somewhere (else the comparison proves little)
    untuned = cohort_metrics(replace(config, personal="none" if personal == "tune" else "head"), arrays, stored,
                             users)
    assert any(a[k] != b[k] for a, b in zip(rows, untuned) for k in ("hr@5", "ndcg@5", "val_ndcg@5"))
    # chunking does not change a user's result
    _assert_rows_equal(rows, cohort_metrics(config, arrays, stored, users, chunk_size=3))


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_a_user_without_training_items_is_scored_untuned(weight_decay: float) -> None:
    """No split user lacks training items, so one is made: its test and validation items stay."""
    config = _config("gmf", weight_decay=weight_decay)
    split, arrays, _ = _trained_global(config)
    users = [split.user_data(u) for u in range(6)]
    users[2] = replace(users[2], train_items=np.zeros(0, dtype=np.int64))
    tuned = _scores(config, arrays, None, users[2])
    np.testing.assert_array_equal(tuned, _scores(config, arrays, None, users[2], personal="none"))
    reference = [user_metrics(config, arrays, None, u) for u in users]
    assert reference[2] == user_metrics(replace(config, personal="none"), arrays, None, users[2])
    # the vectorised evaluation takes the full-copies path for a chunk holding such a user
    _assert_rows_equal(reference, cohort_metrics(config, arrays, [None] * len(users), users))
