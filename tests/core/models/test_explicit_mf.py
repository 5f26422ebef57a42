"""Explicit-rating MF (:mod:`fedrec.core.models.explicit_mf`): scores, split, and fits that
beat the global-mean predictor, central and federated, on a planted problem and ML-100K."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedrec.core.data.interactions import Interactions
from fedrec.core.federation.aggregation import ServerOptimizer, weighted_mean
from fedrec.core.models import build_model, global_state, local_state
from fedrec.core.models.explicit_mf import ExplicitMF
from fedrec.core.training.local_round import new_local_parameters
from fedrec.core.training.ratings import (
    MAE,
    RMSE,
    RatingSplit,
    RatingTrainingConfig,
    evaluate_rating_model,
    global_mean_metrics,
    holdout_ratings,
    initial_rating_arrays,
    pool_rating_metrics,
    train_rating_central,
    train_rating_user,
    user_rating_metrics,
)

SHARED_ML100K = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ml-100k"


def hand_model() -> ExplicitMF:
    """2 users, 3 items, d = 2, every parameter set by hand."""
    model = ExplicitMF(2, 3, 2)
    with torch.no_grad():
        model.global_mean.fill_(3.5)
        model.user_bias.weight.copy_(torch.tensor([[0.2], [-0.5]]))
        model.item_bias.weight.copy_(torch.tensor([[0.1], [-0.2], [0.0]]))
        model.user_embedding.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        model.item_embedding.weight.copy_(torch.tensor([[0.5, 1.0], [-1.0, 0.0], [0.25, 0.25]]))
    return model


def test_hand_worked_predictions() -> None:
    # r̂ = μ + b_u + b_i + <p_u, q_i>
    expected = torch.tensor([[4.3, 2.5, 3.95], [5.1, 2.8, 3.5]])
    model = hand_model()
    with torch.no_grad():
        table = model.score_items(torch.tensor([0, 1]), torch.arange(3))
        pairs = model(torch.tensor([1, 0, 1]), torch.tensor([0, 2, 1]))
    torch.testing.assert_close(table, expected)
    torch.testing.assert_close(pairs, torch.tensor([5.1, 3.95, 2.8]))


def test_hand_worked_penalty() -> None:
    # b_u² + b_i² + ‖p_u‖² + ‖q_i‖²: (0.04 + 0.01 + 1 + 1.25), (0.25 + 0.04 + 4 + 1)
    penalty = hand_model().penalty(torch.tensor([0, 1]), torch.tensor([0, 1]))
    torch.testing.assert_close(penalty, torch.tensor([2.3, 5.29]))


def test_declared_split() -> None:
    model = build_model("explicit-mf", 5, 3, 4)
    assert model.global_parameter_names == ("global_mean", "item_bias.weight", "item_embedding.weight")
    assert model.local_parameter_names == ("user_embedding.weight", "user_bias.weight")
    local = local_state(model)
    assert local["user_embedding.weight"].shape == (5, 4) and local["user_bias.weight"].shape == (5, 1)
    assert global_state(model)["global_mean"].shape == (1,)
    assert not any("user" in name for name in model.global_parameter_names)


def test_a_fresh_user_is_the_average_user() -> None:
    model = hand_model()
    before = {k: v.detach().clone() for k, v in global_state(model).items()}
    model.reset_local_parameters(torch.Generator().manual_seed(3))
    assert torch.equal(model.user_bias.weight, torch.zeros(2, 1))
    assert model.user_embedding.weight.abs().max() > 0
    assert all(torch.equal(before[k], v) for k, v in global_state(model).items())
    arrays = new_local_parameters("explicit-mf", 3, 4, seed=0, user=7)  # the client's path
    assert set(arrays) == {"user_embedding.weight", "user_bias.weight"}
    assert np.all(arrays["user_bias.weight"] == 0)


# --- a planted problem -------------------------------------------------------------


def planted_ratings(seed: int = 0, n_users: int = 40, n_items: int = 30, per_user: int = 20) -> Interactions:
    """``r = clip(3.5 + b_u + b_i + <x_u, y_i> + ε, 1, 5)`` with rank-2 factors, ε ~ N(0, 0.1²)."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(0, 0.9, (n_users, 2)), rng.normal(0, 0.9, (n_items, 2))
    b_user, b_item = rng.normal(0, 0.3, n_users), rng.normal(0, 0.5, n_items)
    users, items, ratings = [], [], []
    for u in range(n_users):
        chosen = rng.choice(n_items, size=per_user, replace=False)
        r = 3.5 + b_user[u] + b_item[chosen] + y[chosen] @ x[u] + rng.normal(0, 0.1, per_user)
        users += [u] * per_user
        items += chosen.tolist()
        ratings += np.clip(r, 1, 5).tolist()
    return Interactions.from_raw(users, items, ratings)


def central_fit(split: RatingSplit, dim: int, config: RatingTrainingConfig, epochs: int,
                bias_only: bool = False) -> ExplicitMF:
    """Central MSE fit with μ started at the mean training rating.

    ``bias_only``: zero embeddings are a fixed point of the MSE gradient (∂/∂p = q = 0,
    ∂/∂q = p = 0), so the fit is the baseline ``μ + b_u + b_i``.
    """
    model = build_model("explicit-mf", split.n_users, split.n_items, dim, seed=0)
    with torch.no_grad():
        model.global_mean.fill_(split.train_mean())
        if bias_only:
            model.user_embedding.weight.zero_()
            model.item_embedding.weight.zero_()
    train_rating_central(split, model, config, epochs, np.random.default_rng(0))
    if bias_only:
        assert model.user_embedding.weight.abs().max() == 0  # still the bias-only model
    return model


def test_central_fit_of_a_planted_problem_beats_the_global_mean() -> None:
    torch.set_num_threads(1)
    split = holdout_ratings(planted_ratings(), test_fraction=0.2, seed=0)
    model = central_fit(split, 4, RatingTrainingConfig(lr=0.05, batch_size=32), 60)
    fitted, floor = evaluate_rating_model(model, split), global_mean_metrics(split)
    assert fitted[RMSE] < 0.5 * floor[RMSE]
    assert fitted[MAE] < 0.5 * floor[MAE]


def test_federated_rounds_on_a_planted_problem_beat_the_global_mean() -> None:
    """FedAvg with a server learning rate on the item tables: each round every user runs
    :func:`train_rating_user` from its stored local part, the server averages Δ."""
    torch.set_num_threads(1)
    split = holdout_ratings(planted_ratings(), test_fraction=0.2, seed=0)
    dim, config = 4, RatingTrainingConfig(lr=0.05, batch_size=8)
    arrays = initial_rating_arrays("explicit-mf", split.n_items, dim, seed=0, global_mean=split.train_mean())
    server = ServerOptimizer("fedavg-slr", lr=5.0, scaled=frozenset(ExplicitMF.item_table_names))
    stored = {u: new_local_parameters("explicit-mf", split.n_items, dim, 0, u) for u in range(split.n_users)}
    for server_round in range(1, 16):
        results = []
        for u in range(split.n_users):
            rng = np.random.default_rng([0, u, server_round])
            result = train_rating_user("explicit-mf", dim, arrays, stored[u], split.user_ratings(u), config, 2, rng)
            stored[u] = result.local
            results.append(result)
        arrays = server.step(arrays, weighted_mean([r.update for r in results], [r.num_examples for r in results]))
    rows = [user_rating_metrics("explicit-mf", dim, arrays, stored[u], split.user_ratings(u), config, 0, 0)
            for u in range(split.n_users)]
    fitted, floor = pool_rating_metrics(rows), global_mean_metrics(split)
    assert fitted[RMSE] < 0.6 * floor[RMSE]


# --- MovieLens 100K ----------------------------------------------------------------


def test_ml100k_beats_the_global_mean_and_the_bias_baseline() -> None:
    """Pinned ranges: global mean ≈ 1.13, μ + b_u + b_i ≈ 0.95, MF (d = 16) ≈ 0.92 RMSE."""
    if not (SHARED_ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens 100K is not in {SHARED_ML100K}; fetch it with `fedrec data download ml-100k`")
    from fedrec.core.data.movielens import load_ml100k

    torch.set_num_threads(1)
    split = holdout_ratings(load_ml100k(SHARED_ML100K), test_fraction=0.1, seed=0)
    config = RatingTrainingConfig(lr=0.02, batch_size=1024, l2=0.1)
    floor = global_mean_metrics(split)
    bias = evaluate_rating_model(central_fit(split, 16, RatingTrainingConfig(lr=0.01, batch_size=1024), 6,
                                             bias_only=True), split)
    mf = evaluate_rating_model(central_fit(split, 16, config, 6), split)
    assert 1.10 < floor[RMSE] < 1.16
    assert bias[RMSE] < 0.97 and bias[RMSE] < floor[RMSE] - 0.15
    assert mf[RMSE] < 0.935 and mf[RMSE] < bias[RMSE] - 0.015
    assert mf[MAE] < bias[MAE] < floor[MAE]
