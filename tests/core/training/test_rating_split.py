"""The explicit-rating path (:mod:`fedrec.core.training.ratings`): hold-out, MSE round, RMSE/MAE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedrec.core.data.interactions import Interactions
from fedrec.core.evaluation.ratings import mae, rmse
from fedrec.core.models import build_model
from fedrec.core.training.local_round import new_local_parameters
from fedrec.core.training.ratings import (
    MAE,
    NUM_RATINGS,
    RMSE,
    RatingTrainingConfig,
    held_out_count,
    holdout_ratings,
    initial_rating_arrays,
    mse_epoch,
    pool_rating_metrics,
    predict_ratings,
    rating_metrics,
    reconstruct_rating_local,
    train_rating_user,
    user_rating_metrics,
)


def ratings_data(seed: int = 0) -> Interactions:
    """6 users with 1, 2, 5, 10, 21 and 40 ratings over 50 items; stars 1..5."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u, n in enumerate((1, 2, 5, 10, 21, 40)):
        users += [u] * n
        items += rng.choice(50, size=n, replace=False).tolist()
    return Interactions.from_raw(users, items, rng.integers(1, 6, size=len(users)))


# --- the split -----------------------------------------------------------------------


def test_held_out_counts() -> None:
    assert [held_out_count(n, 0.1) for n in (0, 1, 2, 5, 10, 21, 40)] == [0, 0, 1, 1, 1, 3, 4]
    assert held_out_count(3, 0.9) == 2  # at least one training rating stays


def test_split_sizes_and_that_it_partitions_each_users_ratings() -> None:
    data = ratings_data()
    split = holdout_ratings(data, test_fraction=0.1, seed=4)
    for u, n in enumerate((1, 2, 5, 10, 21, 40)):
        user = split.user_ratings(u)
        assert len(user.test_items) == held_out_count(n, 0.1) and len(user.train_items) == n - len(user.test_items)
        mine = data.users == u
        original = sorted(zip(data.items[mine].tolist(), data.ratings[mine].tolist()))
        both = sorted(zip([*user.train_items.tolist(), *user.test_items.tolist()],
                          [*user.train_ratings.tolist(), *user.test_ratings.tolist()]))
        assert both == original
    assert split.rating_range == (1.0, 5.0)
    assert split.train_mean() == pytest.approx(float(split.train_ratings.mean()))
    assert len(split.train_users()) == len(split.train_items) and len(split.test_users()) == len(split.test_items)


def test_split_is_seeded_and_independent_of_input_order() -> None:
    data = ratings_data()
    a, b = holdout_ratings(data, seed=1), holdout_ratings(data, seed=1)
    assert np.array_equal(a.test_items, b.test_items)
    assert not np.array_equal(a.test_items, holdout_ratings(data, seed=2).test_items)
    shuffle = np.random.default_rng(9).permutation(len(data))
    shuffled = Interactions(data.users[shuffle], data.items[shuffle], data.ratings[shuffle], None,
                            data.user_ids, data.item_ids)
    assert np.array_equal(holdout_ratings(shuffled, seed=1).test_items, a.test_items)


def test_a_users_hold_out_depends_on_its_own_ratings_only() -> None:
    """A client can recompute its hold-out: dropping another user's ratings changes nothing."""
    data = ratings_data()
    keep = ~((data.users == 5) & (np.arange(len(data)) % 2 == 0))
    fewer = Interactions(data.users[keep], data.items[keep], data.ratings[keep], None, data.user_ids, data.item_ids)
    for u in range(5):
        assert np.array_equal(holdout_ratings(fewer, seed=3).user_ratings(u).test_items,
                              holdout_ratings(data, seed=3).user_ratings(u).test_items)


def test_split_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no ratings"):
        holdout_ratings(Interactions.from_raw([0, 1], [0, 1]))
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="test_fraction"):
            holdout_ratings(ratings_data(), test_fraction=fraction)
    with pytest.raises(IndexError):
        holdout_ratings(ratings_data()).user_ratings(6)


# --- metrics -------------------------------------------------------------------------


def test_hand_worked_metrics() -> None:
    row = rating_metrics(np.asarray([1.0, 2.0, 3.0]), np.asarray([1.0, 3.0, 5.0]))
    assert row[RMSE] == pytest.approx(math.sqrt(5 / 3)) and row[MAE] == pytest.approx(1.0)
    assert row[NUM_RATINGS] == 3


def test_pooled_metrics_equal_the_metrics_over_all_ratings() -> None:
    rng = np.random.default_rng(0)
    pairs = [(rng.uniform(1, 5, n), rng.integers(1, 6, n).astype(float)) for n in (3, 7, 1, 12)]
    pooled = pool_rating_metrics([rating_metrics(p, a) for p, a in pairs]
                                 + [{RMSE: 0.0, MAE: 0.0, NUM_RATINGS: 0.0}])  # a user with no test ratings
    predicted = np.concatenate([p for p, _ in pairs])
    actual = np.concatenate([a for _, a in pairs])
    assert pooled[RMSE] == pytest.approx(rmse(predicted, actual))
    assert pooled[MAE] == pytest.approx(mae(predicted, actual))
    assert pooled[NUM_RATINGS] == 23
    with pytest.raises(ValueError, match="no user"):
        pool_rating_metrics([{RMSE: 0.0, MAE: 0.0, NUM_RATINGS: 0.0}])


def test_predictions_are_clipped_to_the_rating_range() -> None:
    model = build_model("explicit-mf", 1, 2, 2)
    with torch.no_grad():
        model.item_bias.weight.copy_(torch.tensor([[9.0], [-9.0]]))
    assert predict_ratings(model, np.zeros(2, np.int64), np.arange(2), (1.0, 5.0)).tolist() == [5.0, 1.0]


# --- local training ------------------------------------------------------------------


def test_config_validation() -> None:
    for bad in ({"lr": 0}, {"batch_size": 0}, {"optimizer": "lbfgs"}, {"l2": -1.0}):
        with pytest.raises(ValueError):
            RatingTrainingConfig(**bad)


def test_initial_arrays_start_mu_and_only_for_rating_models() -> None:
    arrays = initial_rating_arrays("explicit-mf", 7, 3, seed=0, global_mean=3.6)
    assert set(arrays) == {"global_mean", "item_bias.weight", "item_embedding.weight"}
    assert arrays["global_mean"].tolist() == pytest.approx([3.6])
    with pytest.raises(ValueError, match="not a rating model"):
        initial_rating_arrays("mf", 7, 3, seed=0, global_mean=3.6)


def test_mse_epoch_lowers_the_error_and_the_penalty_shrinks() -> None:
    data = ratings_data()
    norms = {}
    for l2 in (0.0, 0.5):
        model = build_model("explicit-mf", data.n_users, data.n_items, 4)
        config = RatingTrainingConfig(lr=0.05, batch_size=16, l2=l2)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        rng = np.random.default_rng(0)
        losses = [mse_epoch(model, optimizer, data.users, data.items, data.ratings, config, rng) for _ in range(30)]
        assert losses[-1] < 0.1 * losses[0] if l2 == 0 else losses[-1] < losses[0]
        with torch.no_grad():
            norms[l2] = float(model.penalty(torch.from_numpy(data.users), torch.from_numpy(data.items)).mean())
    assert norms[0.5] < 0.5 * norms[0.0]
    with pytest.raises(ValueError, match="differ in length"):
        mse_epoch(model, optimizer, data.users, data.items[:-1], data.ratings, config, rng)


def test_a_penalty_needs_a_model_that_defines_one() -> None:
    data = ratings_data()
    model = build_model("mf", data.n_users, data.n_items, 4)
    optimizer = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match="MF has none"):
        mse_epoch(model, optimizer, data.users, data.items, data.ratings, RatingTrainingConfig(l2=0.1),
                  np.random.default_rng(0))


def test_a_users_round_updates_the_global_part_and_keeps_the_local_part() -> None:
    split = holdout_ratings(ratings_data(), seed=0)
    user = split.user_ratings(5)
    arrays = initial_rating_arrays("explicit-mf", split.n_items, 4, seed=0, global_mean=3.0)
    local = new_local_parameters("explicit-mf", split.n_items, 4, 0, 5)
    config = RatingTrainingConfig(lr=0.05, batch_size=8, l2=0.1)
    result = train_rating_user("explicit-mf", 4, arrays, local, user, config,
                               3, np.random.default_rng(0), user_epochs=1)
    assert set(result.update) == set(arrays) and set(result.local) == set(local)
    assert result.num_examples == 3 * len(user.train_items)
    rated = np.zeros(split.n_items, dtype=bool)
    rated[user.train_items] = True
    for table in ("item_bias.weight", "item_embedding.weight"):  # only rated rows move, penalty included
        moved = np.abs(result.update[table]).sum(axis=1) > 0
        assert np.array_equal(moved, rated), table
    assert result.update["global_mean"][0] != 0
    assert not np.allclose(result.local["user_bias.weight"], 0)  # the user's bias stayed with it


def test_reconstruction_moves_only_the_local_part() -> None:
    split = holdout_ratings(ratings_data(), seed=0)
    user = split.user_ratings(4)
    model = build_model("explicit-mf", 1, split.n_items, 3, seed=1)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    reconstruct_rating_local(model, user.train_items, user.train_ratings, RatingTrainingConfig(lr=0.1), 3,
                             np.random.default_rng(0))
    after = dict(model.named_parameters())
    for name in model.global_parameter_names:
        assert torch.equal(before[name], after[name]) and after[name].requires_grad, name
    for name in model.local_parameter_names:
        assert not torch.equal(before[name], after[name]), name
    with pytest.raises(ValueError, match="one-user"):
        reconstruct_rating_local(build_model("explicit-mf", 2, 3, 2), user.train_items[:0],
                                 user.train_ratings[:0], RatingTrainingConfig(), 1, np.random.default_rng(0))


def test_user_metrics_reconstruct_a_new_user_and_leave_a_stored_one_alone() -> None:
    split = holdout_ratings(ratings_data(), seed=0)
    user = split.user_ratings(5)
    config = RatingTrainingConfig(lr=0.05)
    arrays = initial_rating_arrays("explicit-mf", split.n_items, 4, seed=0, global_mean=split.train_mean())
    stored = new_local_parameters("explicit-mf", split.n_items, 4, 0, 5)
    kept = {k: v.copy() for k, v in stored.items()}
    row = user_rating_metrics("explicit-mf", 4, arrays, stored, user, config, 5, seed=0)
    assert row[NUM_RATINGS] == len(user.test_items) and row[RMSE] >= row[MAE] > 0
    assert all(np.array_equal(kept[k], stored[k]) for k in kept)
    fresh = user_rating_metrics("explicit-mf", 4, arrays, None, user, config, 5, seed=0)
    assert fresh == row  # a new user's part is the same seeded draw as new_local_parameters
    # user 0 has a single rating, kept for training: nothing to evaluate
    assert user_rating_metrics("explicit-mf", 4, arrays, None, split.user_ratings(0), config, 5, 0)[NUM_RATINGS] == 0
