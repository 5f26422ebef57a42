"""The batched DDG encoding (the round driver's emulation) is the one-client encoding, row by row."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.core.privacy.distributed_accounting import plan_distributed_dp
from fedrec.core.privacy.distributed_mode import RunPlan, decode_mean, encode_update, encode_updates
from fedrec.core.privacy.quantisation import (
    Quantiser,
    conditional_round,
    conditional_round_rows,
    decode_sum,
    encode,
    encode_batch,
    modular_sum,
    quantise,
    quantise_batch,
    reduce_modulo,
    rotate,
    walsh_hadamard,
)
from fedrec.core.privacy.secure_random import SecureRandom


def keys(k: int) -> list[bytes]:
    return [bytes([i]) * 32 for i in range(1, k + 1)]


def run_plan(dim: int = 300, n: int = 6) -> RunPlan:
    ddg = plan_distributed_dp(4.0, delta=1e-5, rounds=5, n_min=n, n_clients=n, clip=1.0, dim=dim, bits=20,
                              target_wrap_probability=1e-9)
    return RunPlan(ddg, n, n, 5, 1e-5, 0.0, 0, 4.0)


def updates(k: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(k, dim))
    x[0] *= 0.01  # one inside the clip, the others clipped
    x[1] = 0.0  # a client with nothing to train: its noise share alone
    return x


@pytest.mark.parametrize("rotate_flag", [True, False])
def test_each_row_is_the_single_encoding_with_the_same_stream(rotate_flag: bool) -> None:
    q = Quantiser(clip=1.0, gamma=2e-3, bits=20, dim=300, rotate=rotate_flag)
    x = updates(5, 300)
    batch = encode_batch(x, q, 7.5, [SecureRandom(key) for key in keys(5)], 11)
    for row, key, out in zip(x, keys(5), batch):
        np.testing.assert_array_equal(out, encode(row, q, 7.5, SecureRandom(key), 11))
    # and distributed_mode's names agree with each other
    run = run_plan()
    batch = encode_updates(x, run, 3, [SecureRandom(key) for key in keys(5)])
    for row, key, out in zip(x, keys(5), batch):
        np.testing.assert_array_equal(out, encode_update(row, run, 3, SecureRandom(key)))


def test_rows_are_redrawn_on_their_own_until_their_norm_bound_holds() -> None:
    # every coordinate at 1/2 with β = 0.99: about 40 % of roundings break the bound, so
    # rows need different numbers of tries; each row matches conditional_round alone
    x = np.full((8, 256), 0.5)
    q = Quantiser(clip=8.0, gamma=1.0, bits=20, dim=256, beta=0.99, rotate=False)
    bound = q.norm_bound
    streams = [SecureRandom(key) for key in keys(8)]
    rows = conditional_round_rows(x, bound, streams)
    for row, key, out in zip(x, keys(8), rows):
        rng = SecureRandom(key)
        np.testing.assert_array_equal(out, conditional_round(row, bound, rng))
        assert int(out @ out) <= bound ** 2
    plain_norms = [float(np.linalg.norm(np.floor(x[0]) + (SecureRandom(k).random(256) < 0.5))) for k in keys(40)]
    assert max(plain_norms) > bound  # the bound bites: some first tries are redrawn
    # changing one row's input leaves every other row's output unchanged
    other = x.copy()
    other[3] = 0.25
    again = conditional_round_rows(other, bound, [SecureRandom(key) for key in keys(8)])
    np.testing.assert_array_equal(np.delete(again, 3, axis=0), np.delete(rows, 3, axis=0))


def test_the_batch_meets_the_bound_sums_exactly_and_decodes_within_the_rounding_error() -> None:
    run = run_plan(dim=300, n=6)
    q = run.quantiser
    x = updates(6, 300, seed=1)
    streams = [SecureRandom() for _ in range(6)]
    noiseless = quantise_batch(x, q, 0.0, streams, 5)
    assert all(int(r @ r) <= q.norm_bound ** 2 for r in noiseless)  # the sensitivity B, row by row
    encoded = encode_updates(x, run, 5, [SecureRandom() for _ in range(6)])
    assert encoded.dtype == np.int64 and encoded.min() >= -(1 << 19) and encoded.max() < 1 << 19
    total = modular_sum(list(encoded), q.bits)
    np.testing.assert_array_equal(total, reduce_modulo(encoded.sum(axis=0), q.bits))  # exact modular sum
    clipped = x * np.minimum(1.0, 1.0 / np.maximum(np.linalg.norm(x, axis=1), 1e-300))[:, None]
    # without noise the decoded sum is the clipped sum up to the rounding (< 1 grid unit a coordinate)
    plain = decode_sum(reduce_modulo(noiseless.sum(axis=0), q.bits), q, 5)
    assert np.linalg.norm(plain - clipped.sum(axis=0)) <= 6 * np.sqrt(q.encoded_dim) * q.gamma
    # with the shares, the decoded mean's error is the noise: std ≈ γ·σ_share·√6 / 6 a coordinate
    mean = decode_mean(total, run, 5, 6)
    error = mean - clipped.mean(axis=0)
    assert error.std() == pytest.approx(q.gamma * run.share_std * np.sqrt(6) / 6, rel=0.2)


def test_batched_noise_is_the_discrete_gaussian_share() -> None:
    q = Quantiser(clip=1.0, gamma=1e-2, bits=24, dim=4096)
    x = np.zeros((4, 4096))
    streams = [SecureRandom(key) for key in keys(4)]
    noised = quantise_batch(x, q, 30.0, streams, 0)
    assert np.all(np.abs(noised.mean(axis=1)) < 3 * 30 / np.sqrt(4096))
    np.testing.assert_allclose(noised.std(axis=1), 30.0, rtol=0.05)
    assert len({tuple(r[:20]) for r in noised}) == 4  # every client's share is its own


def test_the_fast_transform_is_the_hadamard_matrix_and_batches_agree() -> None:
    rng = np.random.default_rng(2)
    for n in (1, 2, 8, 32, 128):
        h = np.array([[1.0]])
        while h.shape[0] < n:
            h = np.block([[h, h], [h, -h]])
        x = rng.normal(size=(3, n))
        np.testing.assert_allclose(walsh_hadamard(x), x @ h.T / np.sqrt(n), atol=1e-12)
    x = rng.normal(size=(70, 4096))  # more rows than one chunk
    np.testing.assert_array_equal(walsh_hadamard(x)[41], walsh_hadamard(x[41]))
    np.testing.assert_array_equal(rotate(x[:5, :3000], 9)[2], rotate(x[2, :3000], 9))


def test_one_client_is_the_batch_of_one() -> None:
    q = Quantiser(clip=1.0, gamma=2e-3, bits=20, dim=300)
    x = updates(2, 300)[0]
    np.testing.assert_array_equal(quantise(x, q, 3.0, SecureRandom(keys(1)[0]), 4),
                                  quantise_batch(x[None], q, 3.0, [SecureRandom(keys(1)[0])], 4)[0])


def test_bad_batches_are_refused() -> None:
    q = Quantiser(clip=1.0, gamma=2e-3, bits=20, dim=10)
    with pytest.raises(ValueError, match="one generator per row"):
        quantise_batch(np.zeros((3, 10)), q, 1.0, [SecureRandom()], 0)
    with pytest.raises(ValueError, match="shape"):
        quantise_batch(np.zeros(10), q, 1.0, [SecureRandom()], 0)
    with pytest.raises(ValueError, match="NaN"):
        quantise_batch(np.full((1, 10), np.nan), q, 1.0, [SecureRandom()], 0)
    with pytest.raises(TypeError, match="SecureRandom"):
        quantise_batch(np.zeros((1, 10)), q, 1.0, [np.random.default_rng(0)], 0)
