"""The server's check of a ``user-distributed`` round's sum: garbage from a client is refused."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import leave_one_out
from fedrec.core.families.registry import family_of
from fedrec.core.federation.private_rounds import PrivateRounds
from fedrec.core.federation.server_step import initial_global, server_optimizer
from fedrec.core.privacy import distributed_mode
from fedrec.core.privacy.distributed_accounting import plan_distributed_dp
from fedrec.core.privacy.distributed_mode import (
    SUM_CHECK_FAILURE,
    RunPlan,
    SumOutOfBound,
    check_sum,
    encode_updates,
    sum_norm_bound,
)
from fedrec.core.privacy.quantisation import decode_sum, reduce_modulo
from fedrec.core.privacy.secure_random import SecureRandom


@pytest.fixture(scope="module")
def split():
    return leave_one_out(load_dataset("synthetic", "", 0), 0)


def config(**overrides) -> RunConfig:
    values = dict(dataset="synthetic", model="mf", rounds=3, clients_per_round=8, dim=2, eval_every=3,
                  dp="user-distributed", epsilon=4.0, clip=1.0, lr=2.0, client_optimizer="sgd", server_lr=20.0)
    values.update(overrides)
    return RunConfig(**values)


def one_round(split, c: RunConfig):
    private = PrivateRounds(c, family_of(c.model), split.n_users)
    private.start(split)
    arrays = initial_global(c, split)
    before = {k: v.copy() for k, v in arrays.items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        after, row = private.round(split, arrays, {}, server_optimizer(c, split.n_items), 1)
    return private, before, after, row, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def garbage_client(monkeypatch, rows=(0,)) -> None:
    """Client(s) in ``rows`` of every batch send a uniform vector of Z_m instead of their encoding."""
    def encode(updates, run, seed, rngs):
        out = encode_updates(updates, run, seed, rngs)
        half = 1 << (run.quantiser.bits - 1)
        for i in rows:
            if i < len(out):
                out[i] = np.random.default_rng(i).integers(-half, half, out.shape[1])
        return out

    monkeypatch.setattr("fedrec.core.federation.private_rounds.encode_updates", encode)


def test_an_honest_round_passes_the_check_and_moves_the_model(split) -> None:
    private, before, after, row, warned = one_round(split, config())
    assert row["dp_refused"] == 0 and row["sum_refused"] == "" and not warned
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    run = private.distributed
    summed = decode_sum(private.last_modular_sum, run.quantiser, distributed_mode.rotation_seed(0, 1))
    assert check_sum(summed, run, 8) <= sum_norm_bound(run, 8)


def test_a_garbage_vector_makes_the_round_refused(split, monkeypatch) -> None:
    garbage_client(monkeypatch)
    private, before, after, row, warned = one_round(split, config())
    assert row["dp_refused"] == 1 and "outside the protocol" in row["sum_refused"]
    assert len(warned) == 1 and "refused, the model is unchanged" in str(warned[0].message)
    for k in before:  # the model is unchanged
        np.testing.assert_array_equal(before[k], after[k])
    # still accounted: the server saw the sum
    assert private.rounds_done == 1 and row["epsilon_max"] == private.distributed.epsilon(1, 0)
    assert [e.release for e in private.ledger_entries] == ["train"]


def test_without_the_check_the_garbage_would_move_the_model_far(split, monkeypatch) -> None:
    """The refusal above is the check's doing: with it switched off the garbage is applied."""
    honest = one_round(split, config())
    garbage_client(monkeypatch)
    monkeypatch.setattr("fedrec.core.privacy.distributed_mode.check_sum", lambda summed, run, count: 0.0)
    _, before, after, row, warned = one_round(split, config())
    assert row["dp_refused"] == 0 and not warned
    moved = math.sqrt(sum(float(np.sum((after[k] - before[k]) ** 2)) for k in before))
    moved_honest = math.sqrt(sum(float(np.sum((honest[2][k] - honest[1][k]) ** 2)) for k in before))
    assert moved > 2.5 * moved_honest  # uniform garbage on Z_m: ≈ 4× the longest honest noise


def run_plan(n: int = 20, dim: int = 500) -> RunPlan:
    ddg = plan_distributed_dp(2.0, delta=1e-5, rounds=10, n_min=n, n_clients=n, clip=1.0, dim=dim, bits=20,
                              target_wrap_probability=1e-9)
    return RunPlan(ddg, n, n, 10, 1e-5, 0.0, 0, 2.0)


def test_the_bound_holds_for_honest_worst_case_sums_and_catches_a_longer_one() -> None:
    run = run_plan()
    q = run.quantiser
    seed = 3
    # aligned updates at the clip: the worst case for the data part, 20 trials of the whole round
    direction = np.random.default_rng(0).normal(size=q.dim)
    updates = np.tile(direction / np.linalg.norm(direction) * 5.0, (20, 1))
    for _ in range(20):
        encoded = encode_updates(updates, run, seed, [SecureRandom() for _ in range(20)])
        summed = decode_sum(reduce_modulo(encoded.sum(axis=0), q.bits), q, seed)
        norm = check_sum(summed, run, 20)
        assert norm > 0.5 * 20 * q.clip  # the data part is there (and the bound is not vacuous)
    bound = sum_norm_bound(run, 20)
    with pytest.raises(SumOutOfBound, match="outside the protocol"):
        check_sum(summed / norm * bound * 1.001, run, 20)
    check_sum(summed / norm * bound, run, 20)  # at the bound: accepted
    with pytest.raises(SumOutOfBound):
        check_sum(np.full(q.dim, np.nan), run, 20)


def test_the_bound_terms() -> None:
    run = run_plan()
    q = run.quantiser
    t = math.log(1 / SUM_CHECK_FAILURE)
    d = q.encoded_dim
    noise = math.sqrt(20) * run.share_std * math.sqrt(d + 2 * math.sqrt(d * t) + 2 * t)
    assert sum_norm_bound(run, 20) == pytest.approx(q.gamma * (20 * q.norm_bound + noise))
    # the noise's tail bound is above its typical norm √(count·d')·σ, not far above
    assert 1 < noise / (math.sqrt(20 * d) * run.share_std) < 1 + 3 * math.sqrt(t / d)
    with pytest.raises(ValueError):
        sum_norm_bound(run, 0)
