"""One suite every registered family must pass: declared parts, initial arrays, a local
round whose update holds exactly the global part, an evaluation, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.core.config.run_config import RunConfig
from fedrec.core.families.registry import FAMILIES, family_of
from fedrec.core.federation.driver import run_federation

SETTINGS = {
    "mf": dict(), "sasrec": dict(dim=16, seq_max_len=20), "explicit-mf": dict(dim=8),
    "item-knn": dict(rounds=1, executor="cohort", knn_max_items=20),
}


def _config(model: str, **overrides: object) -> RunConfig:
    return RunConfig(model=model, **{**SETTINGS[model], **overrides})


def test_every_run_model_has_exactly_one_family():
    from fedrec.core.config.run_config import RUN_MODELS

    owners = {model: [f.name for f in FAMILIES if model in f.models] for model in RUN_MODELS}
    assert all(len(names) == 1 for names in owners.values()), owners


@pytest.mark.parametrize("model", sorted(SETTINGS))
def test_a_family_declares_disjoint_parts_and_starts_from_its_global_part(model: str):
    config = _config(model)
    family = family_of(model)
    split = family.load_split(config)
    parts = family.parts(config, split.n_items)
    assert not set(parts.global_names) & set(parts.local_names)
    initial = family.initial_global(config, split)
    assert sorted(initial) == sorted(parts.global_names)
    assert all(initial[name].shape == parts.shapes[name] and initial[name].dtype == np.float32 for name in initial)


@pytest.mark.parametrize("model", sorted(SETTINGS))
def test_a_local_round_updates_exactly_the_global_part_and_keeps_the_local_one(model: str):
    config = _config(model)
    family = family_of(model)
    split = family.load_split(config)
    parts = family.parts(config, split.n_items)
    arrays = family.initial_global(config, split)
    users = list(range(6))
    result = family.train_users(config, arrays, [None] * len(users),
                                [family.user_data(split, u, for_evaluation=False) for u in users], 1)
    assert result.users and result.weight > 0
    assert sorted(result.update_sum) == sorted(parts.global_names)
    assert any(np.any(value != 0) for value in result.update_sum.values())
    for local in result.locals:
        assert sorted(local) == sorted(parts.local_names)
        assert all(local[name].shape == parts.shapes[name] for name in local)
    rows = family.evaluate_users(config, arrays, [None] * 3, [family.user_data(split, u)
                                                              for u in family.evaluated_users(split)[:3]])
    pooled, weight = family.pool(rows)
    assert weight > 0 and all(np.isfinite(v) for v in family.finish(pooled).values())


def test_user_level_dp_wraps_any_family_round():
    """user-local on sasrec: each released update is clipped and noised, and ε is reported."""
    rows = run_federation(_config("sasrec", rounds=1, clients_per_round=5, dp="user-local", epsilon=4.0,
                                  clip=0.5)).rows
    assert rows[-1]["epsilon_max"] == pytest.approx(4.0, rel=0.05) and rows[-1]["clients"] == 5


def test_item_knn_under_user_central_noises_the_summed_shares():
    config = _config("item-knn", dp="user-central", epsilon=2.0, clip=float(np.sqrt(20 * 21 / 2)),
                     clients_per_round=1000)
    plain = run_federation(_config("item-knn", clients_per_round=1000)).arrays
    noisy = run_federation(config)
    assert 0 < noisy.rows[-1]["epsilon_max"] <= 2.0 * (1 + 1e-9)
    difference = noisy.arrays["counts"] - plain["counts"]
    assert 1 < float(np.std(difference)) < 1e4  # noise of std σ·C on every count, not zero
