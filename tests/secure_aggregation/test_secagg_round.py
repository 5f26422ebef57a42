"""A whole SecAgg+ round in process: the server's result is exactly the survivors' sum in Z_m."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.secure_aggregation import RoundCannotBeUnmasked, SecAggClient, SecAggConfig, run_round
from fedrec.secure_aggregation import messages as msg

BITS = 20
M = 1 << BITS


def _inputs(n: int, length: int, seed: int, first_id: int = 1000) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Flower node ids are large uint64s; spaced ids catch any index/id mix-up
    return {first_id + 7919 * i: rng.integers(0, M, length, dtype=np.uint64) for i in range(n)}


def _plain_sum(inputs: dict[int, np.ndarray], nodes) -> np.ndarray:
    return np.sum([inputs[node] for node in nodes], axis=0, dtype=np.uint64) % np.uint64(M)


def test_the_unmasked_sum_equals_the_plain_sum_mod_m() -> None:
    config = SecAggConfig(num_clients=10, neighbourhood_size=9, threshold=6, modulus_bits=BITS, vector_length=500)
    inputs = _inputs(10, 500, seed=1)
    result = run_round(config, inputs)
    assert result.survivors == tuple(sorted(inputs))
    assert result.total.dtype == np.uint64
    np.testing.assert_array_equal(result.total, _plain_sum(inputs, inputs))
    # the sum wraps: it is not the integer sum (which exceeds m), it is that sum mod m
    assert (np.sum(list(inputs.values()), axis=0) >= M).any()


def test_dropouts_after_sharing_keys_and_after_masking_leave_the_survivors_exact_sum() -> None:
    config = SecAggConfig(num_clients=10, neighbourhood_size=9, threshold=6, modulus_bits=BITS, vector_length=300)
    inputs = _inputs(10, 300, seed=2)
    ids = sorted(inputs)
    result = run_round(config, inputs, drop_before={
        msg.SHARE_KEYS: [ids[0]],          # advertised keys, then silent
        msg.COLLECT_MASKED: ids[1:3],      # shared keys (their pairwise masks are in others' vectors), no vector
        msg.UNMASK: ids[3:4],              # sent its masked vector, then silent: its input still counts
    })
    assert result.survivors == tuple(ids[3:])
    assert result.server.dropped == {msg.SETUP: [], msg.SHARE_KEYS: [ids[0]], msg.COLLECT_MASKED: ids[1:3],
                                     msg.UNMASK: [ids[3]]}
    np.testing.assert_array_equal(result.total, _plain_sum(inputs, ids[3:]))
    # the dropped clients' inputs are really out of it
    assert not np.array_equal(result.total, _plain_sum(inputs, ids))


def test_a_sparse_neighbourhood_k_below_n_minus_1_works_with_dropouts() -> None:
    config = SecAggConfig(num_clients=10, neighbourhood_size=4, threshold=3, modulus_bits=BITS, vector_length=300)
    inputs = _inputs(10, 300, seed=3)
    ids = sorted(inputs)
    seen_groups: list[int] = []

    class CountingClient(SecAggClient):
        def share_keys(self, request: msg.Message) -> msg.Message:
            seen_groups.append(len(request[msg.KEY_OWNER_IDS]))
            return super().share_keys(request)

    result = run_round(config, inputs, client_factory=CountingClient,
                       drop_before={msg.COLLECT_MASKED: [ids[4]], msg.UNMASK: [ids[7]]})
    # each client really shared with its 4 neighbours and itself only, not with all 10
    assert seen_groups == [5] * 10
    survivors = [node for node in ids if node != ids[4]]
    assert result.survivors == tuple(survivors)
    np.testing.assert_array_equal(result.total, _plain_sum(inputs, survivors))


@pytest.mark.parametrize("stage", [msg.SHARE_KEYS, msg.COLLECT_MASKED, msg.UNMASK])
def test_fewer_than_t_survivors_stop_the_round_with_a_clear_error(stage: str) -> None:
    config = SecAggConfig(num_clients=10, neighbourhood_size=9, threshold=6, modulus_bits=BITS, vector_length=50)
    inputs = _inputs(10, 50, seed=4)
    with pytest.raises(RoundCannotBeUnmasked, match="cannot be unmasked"):
        run_round(config, inputs, drop_before={stage: sorted(inputs)[:5]})


def test_exactly_t_survivors_still_unmask() -> None:
    config = SecAggConfig(num_clients=10, neighbourhood_size=9, threshold=6, modulus_bits=BITS, vector_length=50)
    inputs = _inputs(10, 50, seed=5)
    ids = sorted(inputs)
    result = run_round(config, inputs, drop_before={msg.COLLECT_MASKED: ids[:4]})
    np.testing.assert_array_equal(result.total, _plain_sum(inputs, ids[4:]))


def test_a_client_sending_a_garbage_vector_is_dropped_and_the_others_sum_is_exact() -> None:
    config = SecAggConfig(num_clients=6, neighbourhood_size=5, threshold=4, modulus_bits=BITS, vector_length=40)
    inputs = _inputs(6, 40, seed=6)
    cheater = sorted(inputs)[2]

    class GarbageClient(SecAggClient):
        def collect_masked(self, request: msg.Message, vector) -> msg.Message:
            reply = super().collect_masked(request, vector)
            if self.node_id == cheater:
                reply[msg.MASKED_VECTOR] = np.full(40, M + 5, dtype=np.uint64)  # outside Z_m
            return reply

    result = run_round(config, inputs, client_factory=GarbageClient)
    assert cheater in result.server.rejected and "≥ m" in result.server.rejected[cheater]
    honest = [node for node in sorted(inputs) if node != cheater]
    assert result.survivors == tuple(honest)
    np.testing.assert_array_equal(result.total, _plain_sum(inputs, honest))


@pytest.mark.parametrize("bits", [1, 33, 64])
def test_any_modulus_width_sums_exactly(bits: int) -> None:
    config = SecAggConfig(num_clients=5, neighbourhood_size=4, threshold=3, modulus_bits=bits, vector_length=64)
    rng = np.random.default_rng(bits)
    high = np.iinfo(np.uint64).max if bits == 64 else (1 << bits) - 1
    inputs = {node: rng.integers(0, high, 64, dtype=np.uint64, endpoint=True) for node in range(5)}
    result = run_round(config, inputs, drop_before={msg.UNMASK: [0], msg.COLLECT_MASKED: [3]})
    expected = np.zeros(64, dtype=np.uint64)
    for node in (0, 1, 2, 4):
        expected += inputs[node]  # wraps mod 2^64, which m divides
    expected &= np.uint64(high)
    np.testing.assert_array_equal(result.total, expected)
