"""The cohort executor does the per-client arithmetic: same updates, vectors, losses, metrics."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.interactions import Interactions
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import LeaveOneOutSplit, UserData, leave_one_out
from fedrec.core.federation.aggregation import weighted_mean
from fedrec.core.models.registry import needs_item_features
from fedrec.core.training.cohort import cohort_round
from fedrec.core.training.cohort_evaluation import cohort_metrics
from fedrec.core.training.local_round import LocalResult, user_metrics, user_round
from fedrec.server.loop import initial_global_arrays

# Feature models read the item features of the run's dataset, so they train on a split of
# a registry dataset (16 users of the synthetic generator, its 500-item catalogue) instead
# of the hand-made one below.
FEATURE_DATASET = "synthetic-16"


def _split(n_users: int = 14, n_items: int = 40, seed: int = 3) -> LeaveOneOutSplit:
    """Users with very different amounts of data: 1 to ~35 training items."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        count = 3 if u == 0 else int(rng.integers(4, n_items - 4))
        chosen = rng.choice(n_items, size=count, replace=False)
        users += [u] * count
        items += list(chosen)
    data = Interactions.from_raw(users, items)
    return leave_one_out(data, seed=seed, eval_negatives=10)


def _case(model: str, n_users: int = 14, **settings) -> tuple[RunConfig, LeaveOneOutSplit]:
    """A run config for ``model`` and the split it trains on (see ``FEATURE_DATASET``)."""
    if not needs_item_features(model):
        return RunConfig(model=model, **settings), _split(n_users)
    config = RunConfig(model=model, dataset=FEATURE_DATASET, **settings)
    split = leave_one_out(load_dataset(FEATURE_DATASET, "", config.seed), seed=3, eval_negatives=10)
    return config, split


def _per_client(config: RunConfig, arrays, stored, users: list[UserData], server_round: int) -> list[LocalResult]:
    return [user_round(config, arrays, s, u, server_round) for s, u in zip(stored, users) if len(u.train_items)]


def _stored_mix(config: RunConfig, users: list[UserData], arrays) -> list:
    """Half the users come with a stored vector from an earlier round, half are new."""
    earlier = _per_client(config, arrays, [None] * len(users), users, 1)
    by_user = {u.user: r.local for u, r in zip([u for u in users if len(u.train_items)], earlier)}
    return [by_user.get(u.user) if i % 2 else None for i, u in enumerate(users)]


def _assert_same(reference: list[LocalResult], cohort, atol: float = 2e-5) -> None:
    assert cohort.updates is not None and len(cohort.updates) == len(reference)
    for ref, update, local, n, loss in zip(reference, cohort.updates, cohort.locals, cohort.num_examples,
                                           cohort.losses):
        assert set(update) == set(ref.update) and set(local) == set(ref.local)
        for name in ref.update:
            np.testing.assert_allclose(update[name], ref.update[name], atol=atol, rtol=1e-4)
        for name in ref.local:
            np.testing.assert_allclose(local[name], ref.local[name], atol=atol, rtol=1e-4)
        assert n == ref.num_examples
        assert loss == pytest.approx(ref.loss, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("model", ["mf", "neumf", "gmf", "mlp", "hybrid", "content"])
@pytest.mark.parametrize("optimizer, lr", [("adam", 0.05), ("sgd", 0.5)])
def test_per_user_updates_match_the_per_client_executor(model: str, optimizer: str, lr: float) -> None:
    """Feature models too: the compact path renumbers items, and the feature rows must follow."""
    config, split = _case(model, dim=6, batch_size=4, local_epochs=2, user_epochs=1,
                          client_optimizer=optimizer, lr=lr)
    arrays = initial_global_arrays(config, split.n_items)
    users = [split.user_data(u) for u in range(split.n_users)]
    users[0] = replace(users[0], train_items=users[0].train_items[:1])  # a single training item
    users[1] = replace(users[1], train_items=np.zeros(0, dtype=np.int64))  # nothing to train on
    stored = _stored_mix(config, users, arrays)
    reference = _per_client(config, arrays, stored, users, 2)
    cohort = cohort_round(config, arrays, stored, users, 2, keep_updates=True)
    assert len(users[1].train_items) == 0 and len(users[0].train_items) == 1
    assert cohort.users == [u.user for u in users if len(u.train_items)] and 1 not in cohort.users
    _assert_same(reference, cohort)


@pytest.mark.parametrize("change", [{"weight_decay": 0.01}, {"loss": "bpr"}, {"user_epochs": 0},
                                    {"negatives": 2, "batch_size": 1},
                                    {"weight_decay": 0.01, "model": "hybrid"}])
def test_other_training_settings_match_too(change: dict) -> None:
    """Weight decay moves every item row (the dense path: whole feature buffer), BPR, no user
    epochs, batch of one."""
    change = dict(change)
    config, split = _case(change.pop("model", "mf"), n_users=8, dim=5, batch_size=4, local_epochs=1)
    config = replace(config, **change)
    arrays = initial_global_arrays(config, split.n_items)
    users = [split.user_data(u) for u in range(split.n_users)]
    reference = _per_client(config, arrays, [None] * len(users), users, 4)
    _assert_same(reference, cohort_round(config, arrays, [None] * len(users), users, 4, keep_updates=True))


def test_chunking_and_memory_budget_do_not_change_the_result() -> None:
    split = _split()
    config = RunConfig(model="neumf", dim=4, batch_size=4)
    arrays = initial_global_arrays(config, split.n_items)
    users = [split.user_data(u) for u in range(split.n_users)]
    whole = cohort_round(config, arrays, [None] * len(users), users, 1, keep_updates=True)
    tiny = cohort_round(config, arrays, [None] * len(users), users, 1, keep_updates=True,
                        memory_budget_bytes=1, chunk_size=3)
    for a, b in zip(whole.updates, tiny.updates):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], atol=1e-6)
    for name in whole.update_sum:
        np.testing.assert_allclose(whole.update_sum[name], tiny.update_sum[name], atol=1e-5)


def test_the_mean_update_is_the_example_weighted_mean_the_strategy_expects() -> None:
    split = _split()
    config = RunConfig(model="mf", dim=4, batch_size=4)
    arrays = initial_global_arrays(config, split.n_items)
    users = [split.user_data(u) for u in range(split.n_users)]
    cohort = cohort_round(config, arrays, [None] * len(users), users, 1, keep_updates=True)
    expected = weighted_mean(cohort.updates, cohort.num_examples)
    for name, value in cohort.mean_update.items():
        np.testing.assert_allclose(value, expected[name], atol=1e-6)
    assert cohort.weight == sum(cohort.num_examples)
    assert cohort.mean_loss == pytest.approx(float(np.average(cohort.losses, weights=cohort.num_examples)))


def test_a_cohort_without_training_data_trains_nobody() -> None:
    split = _split()
    config = RunConfig(model="mf", dim=4)
    arrays = initial_global_arrays(config, split.n_items)
    empty = cohort_round(config, arrays, [], [], 1)
    assert empty.weight == 0 and empty.users == [] and empty.mean_loss == 0.0
    with pytest.raises(ValueError, match="no user"):
        empty.mean_update
    with pytest.raises(ValueError, match="one stored"):
        cohort_round(config, arrays, [None], [], 1)


@pytest.mark.parametrize("model", ["mf", "neumf", "hybrid", "content"])
def test_metrics_match_the_per_client_evaluation(model: str) -> None:
    config, split = _case(model, dim=6, batch_size=4, eval_k=5, reconstruct_epochs=2)
    arrays = initial_global_arrays(config, split.n_items)
    users = [split.user_data(u) for u in range(split.n_users) if split.user_data(u).has_test]
    stored = _stored_mix(config, users, arrays)
    reference = [user_metrics(config, arrays, s, u) for s, u in zip(stored, users)]
    rows = cohort_metrics(config, arrays, stored, users)
    assert len(rows) == len(reference)
    for ref, row in zip(reference, rows):
        assert set(row) == set(ref)
        for key in ref:
            assert row[key] == pytest.approx(ref[key], abs=1e-6), key


def test_unknown_or_missing_devices_are_refused() -> None:
    import torch

    from fedrec.core.training.device import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="unknown device"):
        RunConfig(device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


@pytest.mark.parametrize("model", ["mf", "neumf", "hybrid", "content"])
def test_cuda_cohort_matches_the_cpu_cohort(model: str) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    config, split = _case(model, dim=6, batch_size=4, local_epochs=2)
    arrays = initial_global_arrays(config, split.n_items)
    users = [split.user_data(u) for u in range(split.n_users)]
    cpu = cohort_round(config, arrays, [None] * len(users), users, 1, keep_updates=True)
    gpu = cohort_round(config, arrays, [None] * len(users), users, 1, keep_updates=True, device="cuda")
    for a, b in zip(cpu.updates, gpu.updates):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], atol=1e-4)
    tested = [u for u in users if u.has_test]
    rows_cpu = cohort_metrics(config, arrays, [None] * len(tested), tested)
    rows_gpu = cohort_metrics(config, arrays, [None] * len(tested), tested, device="cuda")
    for a, b in zip(rows_cpu, rows_gpu):
        assert a == pytest.approx(b, abs=1e-6)
