"""``dp user-distributed`` over Flower: SecAgg+ from the ServerApp loop, the ClientApp's stages.

The module-level tests run the real server module (:mod:`fedrec.server.secure_rounds`) and
the real ClientApp stage handler (:mod:`fedrec.client.secure_replies`) with the transport
replaced by a call (``flower_harness.FakeFlower``); the end-to-end run (``fedrec simulate
--executor per-client`` and ``fedrec audit``) is ``tests/simulations/test_simulate_distributed.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flower_harness import NODE_BASE, FakeFlower, array_records, one_round, small_config

from fedrec.core.privacy.distributed_mode import decode_mean, rotation_seed
from fedrec.core.privacy.quantisation import modular_sum, reduce_modulo
from fedrec.protocol.wire import ARRAYS
from fedrec.secure_aggregation import messages as msg
from fedrec.secure_aggregation.server import MASKED_SUM, MASKED_VECTOR, UNMASKED_SUM


def _centred(vectors, bits: int) -> list[np.ndarray]:
    return [reduce_modulo(np.asarray(v).astype(np.int64), bits) for v in vectors]


def _emulated_sum(fake: FakeFlower, nodes, bits: int) -> np.ndarray:
    return modular_sum(_centred([fake.encoded[n] for n in nodes], bits), bits)


# --- (c) the protocol's sum is the emulation's --------------------------------------------------

def test_the_unmasked_sum_equals_the_emulated_modular_sum_of_the_same_encodings() -> None:
    config = small_config()
    fake = FakeFlower(config)
    result, run, _ = one_round(config, fake)
    bits = run.quantiser.bits
    assert not result.skipped and len(result.survivors) == 8 and len(fake.encoded) == 8
    emulated = _emulated_sum(fake, result.survivors, bits)
    np.testing.assert_array_equal(reduce_modulo(result.modular_sum.astype(np.int64), bits), emulated)
    np.testing.assert_allclose(result.mean, decode_mean(emulated, run, rotation_seed(config.seed, 1), 8))
    assert np.linalg.norm(result.mean) > 0


# --- (b) the server holds masked vectors and the sum only ---------------------------------------

def test_the_server_only_ever_holds_masked_vectors_and_the_sums() -> None:
    config = small_config()
    fake = FakeFlower(config)
    seen: list[tuple[str, int | None, np.ndarray]] = []
    result, run, _ = one_round(config, fake, observe=lambda kind, node, v: seen.append((kind, node, v.copy())))
    bits = run.quantiser.bits
    assert [kind for kind, _, _ in seen] == [MASKED_VECTOR] * 8 + [MASKED_SUM, UNMASKED_SUM]
    encodings = _centred(fake.encoded.values(), bits)
    masked = [v for kind, _, v in seen if kind == MASKED_VECTOR]
    for vector in masked:  # no masked vector is (or is close to) any node's encoding
        assert not any(np.count_nonzero(reduce_modulo(vector.astype(np.int64), bits) == z) > 0.01 * z.size
                       for z in encodings)
    # what travelled: every array any node sent is a masked vector; no update, no z_u
    sent_arrays = [record[key].numpy() for stage, _, content in fake.replies for record in array_records(content)
                   for key in record]
    assert len(sent_arrays) == 8
    assert all(stage == msg.COLLECT_MASKED for stage, _, content in fake.replies if array_records(content))
    assert not any(ARRAYS in content for _, _, content in fake.replies)
    for vector in sent_arrays:
        assert not any(np.array_equal(reduce_modulo(vector.astype(np.int64), bits), z) for z in encodings)
    # the masks cancel only in the sum: the unmasked sum is the encodings' sum, no single one
    np.testing.assert_array_equal(reduce_modulo(seen[-1][2].astype(np.int64), bits), modular_sum(encodings, bits))


def test_a_node_keeps_its_encoding_only_until_it_is_masked_and_its_secrets_until_unmasking() -> None:
    from fedrec.client.secagg_stages import INPUT_KEY, STATE_KEY

    config = small_config()
    fake = FakeFlower(config)
    one_round(config, fake)
    for context in fake.contexts.values():
        assert INPUT_KEY not in context.state and STATE_KEY not in context.state


# --- (d) dropouts --------------------------------------------------------------------------------

def test_a_node_dropping_after_share_keys_leaves_the_survivors_sum() -> None:
    config = small_config(ddg_min_clients=6)
    fake = FakeFlower(config, drop_before={msg.COLLECT_MASKED: [NODE_BASE + 3]})
    result, run, _ = one_round(config, fake)
    assert not result.skipped
    assert result.survivors == tuple(n for n in range(NODE_BASE, NODE_BASE + 8) if n != NODE_BASE + 3)
    bits = run.quantiser.bits
    np.testing.assert_array_equal(reduce_modulo(result.modular_sum.astype(np.int64), bits),
                                  _emulated_sum(fake, result.survivors, bits))


def test_a_node_dropping_before_unmask_is_still_in_the_sum() -> None:
    config = small_config(ddg_min_clients=6)
    fake = FakeFlower(config, drop_before={msg.UNMASK: [NODE_BASE + 5]})
    result, run, _ = one_round(config, fake)
    assert not result.skipped and len(result.survivors) == 8
    bits = run.quantiser.bits
    np.testing.assert_array_equal(reduce_modulo(result.modular_sum.astype(np.int64), bits),
                                  _emulated_sum(fake, range(NODE_BASE, NODE_BASE + 8), bits))


def test_fewer_survivors_than_n_min_skip_the_round_before_any_unmasking() -> None:
    config = small_config(ddg_min_clients=6)
    fake = FakeFlower(config, drop_before={msg.COLLECT_MASKED: [NODE_BASE + 1, NODE_BASE + 2, NODE_BASE + 4]})
    result, _, _ = one_round(config, fake)
    assert result.mean is None and result.modular_sum is None
    assert "fewer than n_min = 6" in result.skipped
    assert msg.UNMASK not in fake.stages_sent  # nobody was asked for a share: the sum was never rebuilt


def test_fewer_holders_than_the_threshold_skip_the_round() -> None:
    config = small_config(ddg_min_clients=2)  # t = 5 of 8 (complete graph): 4 left cannot rebuild
    fake = FakeFlower(config, drop_before={msg.SHARE_KEYS: [NODE_BASE + i for i in range(4)]})
    result, _, _ = one_round(config, fake)
    assert result.mean is None and "cannot be unmasked" in result.skipped
    assert msg.COLLECT_MASKED not in fake.stages_sent


def test_a_server_sampling_fewer_than_n_min_nodes_sends_nothing() -> None:
    config = small_config(clients_per_round=8, ddg_min_clients=8)
    fake = FakeFlower(config)
    from fedrec.core.families.registry import family_of
    from fedrec.core.federation.server_step import initial_global
    from fedrec.protocol.distributed_plan import flower_run_plan
    from fedrec.server.secure_rounds import run_secure_round

    arrays = initial_global(config, family_of(config.model).load_split(config))
    run = flower_run_plan(config, arrays, 8)
    from flower_harness import instructions

    result = run_secure_round(None, instructions(config, arrays, [NODE_BASE, NODE_BASE + 1], 1), run, 1, 0, 60.0,
                              fake.send)
    assert result.mean is None and "fewer than the 8" in result.skipped and not fake.stages_sent


def test_a_skipped_round_writes_no_ledger_row_and_a_released_one_does(tmp_path: Path) -> None:
    from fedrec.core.families.registry import family_of
    from fedrec.core.federation.server_step import initial_global
    from fedrec.core.privacy.ledger import read_ledger
    from fedrec.protocol.distributed_plan import flower_run_plan
    from fedrec.server.privacy import ServerPrivacy

    config = small_config()
    arrays = initial_global(config, family_of(config.model).load_split(config))
    run = flower_run_plan(config, arrays, 8)
    privacy = ServerPrivacy.open(config, 8, tmp_path, "run", sign=False, distributed=run)
    skipped = privacy.record_distributed_round(1, released=False)
    released = privacy.record_distributed_round(2, released=True)
    refused = privacy.record_distributed_round(3, released=True, refused=True)  # seen by the server, not used
    privacy.close()
    rows = read_ledger(tmp_path / "privacy.db")
    assert [(r.round, r.release, r.accountant) for r in rows] == [(2, "train", "ddg-zcdp"), (3, "train", "ddg-zcdp")]
    assert skipped["epsilon_max"] is None and released["epsilon_max"] == pytest.approx(run.epsilon(1, 0))
    assert (released["dp_refused"], refused["dp_refused"]) == (0, 1)
    assert refused["epsilon_max"] == pytest.approx(run.epsilon(2, 0))


# --- a client sending garbage ---------------------------------------------------------------------

def test_a_node_masking_garbage_gets_the_released_sum_refused_and_the_model_unchanged() -> None:
    from flwr.app import Array, ArrayRecord

    from fedrec.client.secagg_stages import INPUT, INPUT_KEY
    from fedrec.core.privacy.secure_random import SecureRandom

    config = small_config()
    bits = None

    def garbage(node, context) -> None:  # node 1002 masks a uniform vector of Z_m instead of its encoding
        nonlocal bits
        if node == NODE_BASE + 2:
            z = context.state.array_records[INPUT_KEY][INPUT].numpy()
            bits = 20
            uniform = np.asarray(SecureRandom().integers(0, 1 << bits, size=z.size), dtype=np.uint64)
            context.state[INPUT_KEY] = ArrayRecord({INPUT: Array(uniform)})

    fake = FakeFlower(config, after_setup=garbage)
    result, run, _ = one_round(config, fake)
    assert run.quantiser.bits == bits
    assert result.released and result.mean is None and not result.skipped
    assert "the decoded sum of 8 clients has norm" in result.refused


# --- refusals by the node ------------------------------------------------------------------------

def test_a_node_refuses_a_modulus_that_is_not_its_own_plan() -> None:
    from fedrec.protocol.secagg_records import from_content, to_content
    from fedrec.secure_aggregation.errors import ProtocolViolation

    config = small_config()
    fake = FakeFlower(config)
    original = fake.send

    def tampering(grid, messages, timeout):
        for message in messages:
            request, round_ = from_content(message.content)
            if request[msg.STAGE] == msg.SETUP:
                request["modulus_bits"] = 40
                content = to_content(request, round_)
                for key in (ARRAYS, "config"):
                    content[key] = message.content[key]
                message.content = content
        return original(grid, messages, timeout)

    fake.send = tampering
    with pytest.raises(ProtocolViolation, match="not the run's plan"):
        one_round(config, fake)
