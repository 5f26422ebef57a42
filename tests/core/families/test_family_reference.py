"""The round driver against the loops each family had before it (reference tests).

Each reference below is the plain loop the family ran before the one driver existed
(``federated_sequence_training``, compare's FedAvg of explicit MF, ``run_federated_itemknn``),
kept here as the obviously-right version: same sampling, same per-user seeds, same
server step. The driver must reproduce their global arrays and metrics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.core.arrays import to_numpy
from fedrec.core.baselines.federated_itemknn import run_federated_itemknn
from fedrec.core.config.run_config import RunConfig
from fedrec.core.families.itemknn import similarity_of
from fedrec.core.families.registry import family_of
from fedrec.core.federation.aggregation import ServerOptimizer, weighted_mean
from fedrec.core.federation.driver import run_federation
from fedrec.core.federation.sampling import sample_users
from fedrec.core.models.explicit_mf import ExplicitMF
from fedrec.core.models.sequence import SASRecConfig, load_sequence_global, sequence_global_state
from fedrec.core.training.local_round import new_local_parameters
from fedrec.core.training.ratings import (
    RatingTrainingConfig,
    initial_rating_arrays,
    pool_rating_metrics,
    train_rating_user,
    user_rating_metrics,
)
from fedrec.core.training.sequence import (
    SequenceTrainingConfig,
    evaluate_sequence_model,
    sequence_user_round,
    trainable_users,
)


def _reference_sequence(split, model_config, training, rounds, clients, local_epochs, server_lr, seed, k):
    torch.set_num_threads(1)  # as the driver: the float summation order of a matmul depends on it
    eligible = trainable_users(split)
    model = model_config.build(split.n_items, seed=seed)
    arrays = to_numpy(sequence_global_state(model))
    server = ServerOptimizer("fedavg-slr", server_lr, scaled=frozenset(model.item_table_names))
    for server_round in range(1, rounds + 1):
        chosen = eligible[sample_users(len(eligible), clients, seed, server_round, "train")]
        results = [sequence_user_round(arrays, split.user_data(int(u), for_evaluation=False), model_config, training,
                                       local_epochs, seed, server_round) for u in chosen]
        arrays = server.step(arrays, weighted_mean([r.update for r in results], [r.num_examples for r in results]))
    load_sequence_global(model, {name: torch.from_numpy(v) for name, v in arrays.items()})
    return arrays, evaluate_sequence_model(model, split, k)


def test_sasrec_through_the_driver_matches_the_plain_federated_loop():
    config = RunConfig(model="sasrec", rounds=2, clients_per_round=12, client_optimizer="adam", local_epochs=1, lr=0.01, batch_size=8, negatives=1,
                       server_lr=10.0, dim=16, seq_max_len=20, eval_every=2, seed=3)
    split = family_of("sasrec").load_split(config)
    expected_arrays, expected = _reference_sequence(
        split, SASRecConfig(dim=16, max_len=20, blocks=1, heads=1, dropout=0.2),
        SequenceTrainingConfig(lr=0.01, batch_size=8, negatives=1), 2, 12, 1, 10.0, 3, 10)
    result = run_federation(config, split)
    # Round 1 agrees to 1.5e-8 (float32 rounding of the aggregate); Adam in round 2 magnifies
    # that to a few 1e-5 on some weights, hence the tolerances.
    for name, value in expected_arrays.items():
        np.testing.assert_allclose(result.arrays[name], value, rtol=0, atol=2e-4, err_msg=name)
    for key in ("hr@10", "ndcg@10", "full_hr@10"):
        assert result.rows[-1][key] == pytest.approx(expected[key], abs=5e-3), key


def _reference_ratings(split, rounds, clients, seed, dim):
    config = RatingTrainingConfig(lr=0.02, batch_size=32, l2=0.05)
    arrays = initial_rating_arrays("explicit-mf", split.n_items, dim, seed, split.train_mean())
    server = ServerOptimizer("fedavg-slr", lr=10.0, scaled=frozenset(ExplicitMF.item_table_names))
    stored = {}
    for server_round in range(1, rounds + 1):
        results = []
        for u in (int(u) for u in sample_users(split.n_users, clients, seed, server_round, "train")):
            user = split.user_ratings(u)
            if len(user.train_items) == 0:
                continue
            local = stored.get(u) or new_local_parameters("explicit-mf", split.n_items, dim, seed, u)
            result = train_rating_user("explicit-mf", dim, arrays, local, user, config, 2,
                                       np.random.default_rng([seed, u, server_round]), user_epochs=1)
            stored[u] = result.local
            results.append(result)
        arrays = server.step(arrays, weighted_mean([r.update for r in results], [r.num_examples for r in results]))
    metrics = pool_rating_metrics([user_rating_metrics("explicit-mf", dim, arrays, stored.get(u), split.user_ratings(u),
                                                       config, 3, seed) for u in range(split.n_users)])
    return arrays, metrics


def test_explicit_mf_through_the_driver_matches_the_plain_federated_loop():
    config = RunConfig(model="explicit-mf", dim=8, rounds=2, clients_per_round=15, client_optimizer="adam", lr=0.02, batch_size=32,
                       weight_decay=0.05, local_epochs=2, user_epochs=1, server_lr=10.0, eval_every=2, seed=1)
    split = family_of("explicit-mf").load_split(config)
    expected_arrays, expected = _reference_ratings(split, 2, 15, 1, 8)
    result = run_federation(config, split)
    for name, value in expected_arrays.items():
        np.testing.assert_allclose(result.arrays[name], value, rtol=0, atol=1e-6, err_msg=name)
    assert result.rows[-1]["rmse"] == pytest.approx(expected["rmse"], rel=1e-6)
    assert result.rows[-1]["mae"] == pytest.approx(expected["mae"], rel=1e-6)


def test_item_knn_through_the_driver_builds_the_similarity_of_the_one_shot_algorithm():
    config = RunConfig(model="item-knn", rounds=1, executor="cohort", knn_max_items=15, knn_neighbours=10,
                       knn_shrink=5.0, seed=2)
    split = family_of("item-knn").load_split(config)
    config = RunConfig(model="item-knn", rounds=1, executor="cohort", knn_max_items=15, knn_neighbours=10,
                       knn_shrink=5.0, seed=2, clients_per_round=split.n_users)
    expected = run_federated_itemknn(split, 15, 10, 5.0, seed=2)
    result = run_federation(config, split)
    np.testing.assert_array_equal(similarity_of(config, result.arrays), expected.similarity)
