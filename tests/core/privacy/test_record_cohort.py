"""``dp record`` vectorised over a cohort equals the per-client Opacus path, key for key."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.split import UserData
from fedrec.core.models.base import global_state, local_state
from fedrec.core.models.registry import build_model
from fedrec.core.privacy import client_round
from fedrec.core.privacy.record_cohort import train_users_private
from fedrec.core.privacy.record_level import RecordDP, train_user_private
from fedrec.core.privacy.secure_random import SecureRandom
from fedrec.core.training.implicit import TrainingConfig

N_ITEMS, DIM = 30, 4
# a few ulps of float32 per step: the two paths sum the clipped gradients in a different order
TOLERANCE = 1e-6


def users(sizes=(5, 0, 12, 1, 30)) -> list[UserData]:
    rng = np.random.default_rng(0)
    return [UserData(user=u, n_items=N_ITEMS, train_items=rng.choice(N_ITEMS, size=s, replace=False).astype(np.int64),
                     validation_item=-1, test_item=-1, eval_negatives=None) for u, s in enumerate(sizes)]


def keys(n: int) -> list[bytes]:
    return [bytes([u + 1]) * 32 for u in range(n)]


@pytest.mark.parametrize("model, optimizer, loss, epochs", [
    ("mf", "adam", "bce", (1, 1)), ("neumf", "sgd", "bce", (1, 1)), ("gmf", "adam", "bpr", (2, 0)),
    ("mlp", "sgd", "bpr", (1, 2)),
])
def test_the_vectorised_round_equals_the_per_client_opacus_round(model: str, optimizer: str, loss: str,
                                                                 epochs: tuple[int, int]) -> None:
    """Same keys → the same Poisson masks, negatives and noise: updates, local parts, losses,
    example counts and the accountant's runs agree (users with 0, 1 and many records)."""
    template = build_model(model, 1, N_ITEMS, DIM, seed=1)
    global_arrays = {k: v.detach().numpy().copy() for k, v in global_state(template).items()}
    data = users()
    locals_ = [{k: (v.detach().numpy() + 0.1 * u).copy() for k, v in local_state(template).items()}
               for u in range(len(data))]
    config = TrainingConfig(lr=0.05, batch_size=4, negatives=3, loss=loss, optimizer=optimizer, weight_decay=1e-3)
    dp = RecordDP(noise_multiplier=0.7, clip=0.5, accountant="rdp", sample_rate=0.4, divisor=4.0)
    local_epochs, user_epochs = epochs
    per_client = [train_user_private(model, DIM, global_arrays, locals_[u], data[u], config, local_epochs,
                                     user_epochs, SecureRandom(key), dp) for u, key in enumerate(keys(len(data)))]
    cohort = train_users_private(model, DIM, global_arrays, locals_, data, config, local_epochs, user_epochs,
                                 [SecureRandom(key) for key in keys(len(data))], dp, chunk_users=3)
    for (one, history), (other, other_history) in zip(per_client, cohort):
        assert history == other_history
        assert one.num_examples == other.num_examples and one.loss == pytest.approx(other.loss, abs=1e-6)
        for name in one.update:
            np.testing.assert_allclose(other.update[name], one.update[name], atol=TOLERANCE, rtol=0)
        for name in one.local:
            np.testing.assert_allclose(other.local[name], one.local[name], atol=TOLERANCE, rtol=0)
    # the check can fail: another key for one user changes that user's result
    moved = train_users_private(model, DIM, global_arrays, locals_, data, config, local_epochs, user_epochs,
                                [SecureRandom(key) for key in keys(len(data) - 1)] + [SecureRandom(b"z" * 32)], dp)
    assert max(np.abs(moved[-1][0].update[n] - cohort[-1][0].update[n]).max() for n in global_arrays) > 1e-3


def test_the_cohort_executor_trains_record_users_with_the_same_accounting() -> None:
    """Through the client round: the per-client loop and the cohort give each user the same
    release and history, and a user whose next round would exceed the budget refuses in both."""
    config = RunConfig(dataset="synthetic", model="mf", dim=DIM, dp="record", epsilon=8.0, executor="per-client",
                       lr=0.05, batch_size=4, negatives=3, client_optimizer="sgd")
    template = build_model("mf", 1, N_ITEMS, DIM, seed=1)
    global_arrays = {k: v.detach().numpy().copy() for k, v in global_state(template).items()}
    data = users((4, 7, 0))
    spent = [(0.3, 1.0, 400)]  # a history past the budget: that user refuses
    histories = [[], spent, []]
    stored = [{k: v.detach().numpy().copy() for k, v in local_state(template).items()} for _ in data]
    looped = [client_round.private_train_users(config, global_arrays, [stored[b]], [data[b]], 1, [histories[b]],
                                               SecureRandom(key)) for b, key in enumerate(keys(len(data)))]
    cohort = client_round._record_cohort(replace(config, executor="cohort"), global_arrays, stored, data, histories,
                                         [SecureRandom(key) for key in keys(len(data))])
    assert [r.refused for r in cohort.releases] == [False, True, False]
    assert [loop.releases[0] for loop in looped] == cohort.releases
    assert [loop.histories[0] for loop in looped] == cohort.histories
    assert cohort.result.users == [0, 2] and cohort.result.weight == 2
    summed = {n: looped[0].result.update_sum[n] + looped[2].result.update_sum[n] for n in global_arrays}
    for name in global_arrays:
        np.testing.assert_allclose(cohort.result.update_sum[name], summed[name], atol=TOLERANCE, rtol=0)


def test_generators_must_be_secure_and_one_per_user() -> None:
    template = build_model("mf", 1, N_ITEMS, DIM, seed=1)
    global_arrays = {k: v.detach().numpy().copy() for k, v in global_state(template).items()}
    data = users((3,))
    locals_ = [{k: v.detach().numpy().copy() for k, v in local_state(template).items()}]
    config = TrainingConfig(lr=0.05, batch_size=4, negatives=3)
    dp = RecordDP(noise_multiplier=1.0, clip=1.0, accountant="rdp", sample_rate=0.5, divisor=4.0)
    with pytest.raises(TypeError, match="SecureRandom"):
        train_users_private("mf", DIM, global_arrays, locals_, data, config, 1, 1, [np.random.default_rng(0)], dp)
    with pytest.raises(ValueError, match="one generator per user"):
        train_users_private("mf", DIM, global_arrays, locals_, data, config, 1, 1, [], dp)
