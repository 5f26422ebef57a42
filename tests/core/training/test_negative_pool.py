"""train-negatives: ``unseen-train`` may draw a user's held-out items as training negatives;
``unseen-all`` (the literature's shared data loader) never does, and so leaks the test item to
long local training; ``unseen-eval`` never draws any evaluation candidate. Both executors draw
the same."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.core.config.run_config import RunConfig
from fedrec.core.families.implicit import ImplicitFamily, run_split
from fedrec.core.training.cohort import cohort_round
from fedrec.core.training.cohort_evaluation import cohort_metrics
from fedrec.core.training.implicit import negative_key, sample_negatives
from fedrec.core.training.local_round import user_metrics, user_round

DATASET = "synthetic-20"


def _config(pool: str, **settings: object) -> RunConfig:
    return RunConfig(model="mf", dataset=DATASET, dim=8, batch_size=8, eval_k=5, reconstruct_epochs=1,
                     train_negatives=pool, **settings)


def _draws(user, pool: str) -> np.ndarray:
    key = negative_key(user, pool)
    users = np.zeros(5000, dtype=np.int64)
    return sample_negatives(users, key, user.n_items, 4, np.random.default_rng(0)).ravel()


def test_unseen_all_never_draws_held_out_items_and_unseen_train_does() -> None:
    split = run_split(_config("unseen-all"))
    user = split.user_data(2)
    held_out = [user.validation_item, user.test_item]
    assert all(i >= 0 for i in held_out)
    strict = _draws(user, "unseen-all")
    loose = _draws(user, "unseen-train")
    assert not np.isin(strict, held_out).any()
    assert not np.isin(strict, user.train_items).any() and not np.isin(loose, user.train_items).any()
    # 20 000 draws over the catalogue minus the training items: each held-out item is drawn
    assert np.isin(loose, held_out).sum() > 10


def test_unknown_pool_and_record_dp_are_refused() -> None:
    with pytest.raises(ValueError, match="train-negatives"):
        _config("everything")
    with pytest.raises(ValueError, match="train-negatives unseen-all"):
        RunConfig(model="mf", dataset=DATASET, train_negatives="unseen-all", dp="record", epsilon=8.0)


def test_cohort_executor_draws_what_a_client_draws() -> None:
    config = _config("unseen-all")
    family = ImplicitFamily()
    split = run_split(config)
    arrays = family.initial_global(config, split)
    users = [split.user_data(u, for_evaluation=False) for u in range(8)]
    vectorised = cohort_round(config, arrays, [None] * len(users), users, 1, keep_updates=True)
    for b, user in enumerate(users):
        one = user_round(config, arrays, None, user, 1)
        for name, value in one.update.items():
            np.testing.assert_allclose(vectorised.updates[b][name], value, atol=2e-6)
    assert vectorised.users == [u.user for u in users]
    plain = cohort_round(_config("unseen-train"), arrays, [None] * len(users), users, 1, keep_updates=True)
    assert any(np.abs(plain.updates[b]["item_embedding.weight"] - vectorised.updates[b]["item_embedding.weight"]).max()
               > 1e-6 for b in range(len(users)))


def test_cohort_evaluation_matches_the_client_with_unseen_all() -> None:
    config = _config("unseen-all", personal="tune")
    split = run_split(config)
    arrays = ImplicitFamily().initial_global(config, split)
    users = [split.user_data(int(u)) for u in split.evaluated_users()[:10]]
    rows = cohort_metrics(config, arrays, [None] * len(users), users)
    for row, user in zip(rows, users):
        expected = user_metrics(config, arrays, None, user)
        assert row.keys() == expected.keys()
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, abs=1e-6)


def test_central_twin_excludes_every_users_held_out_items_with_unseen_all() -> None:
    from fedrec.core.training.central import _excluded_pairs

    split = run_split(_config("unseen-all"))
    users, items = _excluded_pairs(split, "unseen-all")
    plain_users, plain_items = _excluded_pairs(split, "unseen-train")
    pairs = set(zip(users.tolist(), items.tolist()))
    assert set(zip(plain_users.tolist(), plain_items.tolist())) <= pairs
    for u in range(split.n_users):
        for held in (split.validation_item[u], split.test_item[u]):
            if held >= 0:
                assert (u, int(held)) in pairs
                assert (u, int(held)) not in set(zip(plain_users.tolist(), plain_items.tolist()))
    with pytest.raises(ValueError, match="train-negatives"):
        _excluded_pairs(split, "nowhere")


# --- the label leak of unseen-all, and unseen-eval without it -----------------------------------

def _never_a_negative_hr(pool: str, epochs: int, k: int = 10) -> float:
    """HR@k of a 'model' that knows nothing of taste: it ranks each user's evaluation candidates
    (test item + its sampled negatives) by how rarely they were drawn as training negatives over
    ``epochs`` epochs of 4 negatives per training item (ties broken by a seeded coin). What long
    local training (post-tuning, a local head) can learn from the negatives alone."""
    split = run_split(RunConfig(model="mf", dataset="synthetic", dim=8))
    rng = np.random.default_rng(7)
    hits = []
    for u in split.evaluated_users()[:300]:
        user = split.user_data(int(u))
        key = negative_key(user, pool)
        draws = sample_negatives(np.zeros(len(user.train_items) * epochs, dtype=np.int64), key, user.n_items, 4,
                                 rng).ravel()
        counts = np.bincount(draws, minlength=user.n_items)
        candidates = np.concatenate([[user.test_item], user.eval_negatives])
        order = np.lexsort((rng.random(len(candidates)), counts[candidates]))  # fewest draws first
        hits.append(0 in order[:k])
    return float(np.mean(hits))


def test_unseen_all_leaks_the_test_item_to_long_local_training_and_unseen_eval_does_not() -> None:
    chance = 10 / 100  # 10 of 100 exchangeable candidates
    # unseen-all: the test item is never drawn, the sampled evaluation negatives are: after 10
    # epochs "fewest draws" finds the test item far above chance (users with few training items
    # draw too few negatives to mark every candidate)
    assert _never_a_negative_hr("unseen-all", epochs=10) > 5 * chance
    # unseen-eval never draws any candidate: they stay exchangeable; unseen-train draws each alike
    for pool in ("unseen-eval", "unseen-train"):
        assert abs(_never_a_negative_hr(pool, epochs=10) - chance) < 0.06, pool


def test_unseen_eval_never_draws_an_evaluation_candidate_and_needs_the_negatives() -> None:
    split = run_split(_config("unseen-eval"))
    user = split.user_data(2)
    candidates = np.concatenate([[user.validation_item, user.test_item], user.eval_negatives])
    drawn = _draws(user, "unseen-eval")
    assert not np.isin(drawn, candidates).any() and not np.isin(drawn, user.train_items).any()
    with pytest.raises(ValueError, match="evaluation negatives were not drawn"):
        negative_key(split.user_data(2, for_evaluation=False), "unseen-eval")


def test_unseen_eval_trains_through_both_executors_alike() -> None:
    from dataclasses import replace

    from fedrec.core.federation.driver import run_federation

    config = _config("unseen-eval", executor="cohort", rounds=1, clients_per_round=20)
    split = run_split(config)
    rows = run_federation(config, split).rows
    assert rows[-1]["clients"] == 20 and np.isfinite(rows[-1]["train_loss"])
    per_client = run_federation(replace(config, executor="per-client"), split).rows
    assert per_client[-1]["train_loss"] == pytest.approx(rows[-1]["train_loss"], rel=1e-4)
