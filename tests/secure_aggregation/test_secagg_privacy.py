"""What the server sees: only masked vectors and the sum; and the requests clients refuse."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fedrec.secure_aggregation import (
    ProtocolViolation,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    UnmaskRequestRefused,
    run_round,
)
from fedrec.secure_aggregation import messages as msg
from fedrec.secure_aggregation.server import MASKED_SUM, MASKED_VECTOR, UNMASKED_SUM

BITS = 20
M = 1 << BITS


def _arrays_in(value: object, depth: int = 0) -> list[np.ndarray]:
    """Every numpy array reachable from ``value`` through attributes, dicts, lists, tuples and sets."""
    if depth > 6:
        return []
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, dict):
        return [a for item in value.values() for a in _arrays_in(item, depth + 1)]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [a for item in value for a in _arrays_in(item, depth + 1)]
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return _arrays_in(vars(value), depth + 1)
    return []


class _Round:
    """Drives server and clients stage by stage, so a test can look at the server in between."""

    def __init__(self, config: SecAggConfig, inputs: dict[int, np.ndarray], **server_options) -> None:
        self.inputs = inputs
        self.server = SecAggServer(config, list(inputs), **server_options)
        self.clients = {node: SecAggClient(node) for node in inputs}

    def setup_and_share(self) -> None:
        self.server.receive_public_keys({n: self.clients[n].setup(r) for n, r in self.server.setup_requests().items()})
        self.server.receive_encrypted_shares(
            {n: self.clients[n].share_keys(r) for n, r in self.server.share_keys_requests().items()})

    def mask(self) -> dict[int, msg.Message]:
        replies = {n: self.clients[n].collect_masked(r, self.inputs[n])
                   for n, r in self.server.masked_vector_requests().items()}
        self.server.receive_masked_vectors(replies)
        self.server_replies = replies
        return replies


def test_the_server_only_ever_holds_masked_vectors_and_the_final_sum() -> None:
    config = SecAggConfig(num_clients=10, neighbourhood_size=9, threshold=6, modulus_bits=BITS, vector_length=2000)
    rng = np.random.default_rng(7)
    # quantised updates are small compared with m: an unmasked one would stand out
    inputs = {node: rng.integers(0, 1000, 2000, dtype=np.uint64) for node in range(100, 110)}
    observed: list[tuple[str, int | None, np.ndarray]] = []
    run = _Round(config, inputs, observe_vector=lambda kind, node, v: observed.append((kind, node, v.copy())))

    def assert_no_input_held() -> None:
        for array in _arrays_in(run.server):
            for node, x in inputs.items():
                assert not (array.shape == x.shape and np.array_equal(array, x)), f"server holds node {node}'s input"

    run.setup_and_share()
    assert_no_input_held()
    replies = run.mask()
    assert_no_input_held()
    total = run.server.receive_unmask_shares(
        {n: run.clients[n].unmask(r) for n, r in run.server.unmask_requests().items()})
    assert_no_input_held()

    kinds = [kind for kind, _, _ in observed]
    assert kinds == [MASKED_VECTOR] * 10 + [MASKED_SUM, UNMASKED_SUM]
    for kind, node, vector in observed:
        if kind == MASKED_VECTOR:
            np.testing.assert_array_equal(vector, replies[node][msg.MASKED_VECTOR])
            assert replies[node][msg.MASKED_VECTOR].dtype == np.uint32  # 20 bits travel in 4 bytes, not 8
            # a masked entry matches its input with probability 1/m; and it spreads over all of Z_m
            assert np.mean(vector == inputs[node]) < 0.01
            assert vector.max() > M // 2 and not np.all(vector < 1000)
    expected = np.sum(list(inputs.values()), axis=0, dtype=np.uint64) % np.uint64(M)
    np.testing.assert_array_equal(observed[-1][2], expected)
    np.testing.assert_array_equal(total, expected)


def test_a_masked_vector_alone_is_uniform_on_z_m_and_fresh_every_round() -> None:
    bits, length = 8, 1 << 14
    config = SecAggConfig(num_clients=3, neighbourhood_size=2, threshold=2, modulus_bits=bits, vector_length=length)
    zeros = {node: np.zeros(length, dtype=np.uint64) for node in (1, 2, 3)}
    seed = os.urandom(32)
    masked: list[np.ndarray] = []
    for _ in range(2):
        observer = lambda kind, node, v: masked.append(v.copy()) if kind == MASKED_VECTOR and node == 2 else None  # noqa: E731
        result = run_round(config, zeros, graph_seed=seed, observe_vector=observer)
        np.testing.assert_array_equal(result.total, np.zeros(length, dtype=np.uint64))
    first, second = masked
    # the input is all zeros, so y is pure mask: Pearson χ² over the 256 residues, df = 255
    counts = np.bincount(first.astype(np.int64), minlength=1 << bits)
    expected = length / (1 << bits)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 255 + 6 * np.sqrt(2 * 255), chi2   # ~6σ above the mean: a biased mask fails
    assert counts.min() > 0                          # every residue, m − 1 included, occurs
    # same inputs, same graph, new keys and seeds: a different vector
    assert np.mean(first == second) < 0.05


def _masked_round(n: int = 5) -> _Round:
    config = SecAggConfig(num_clients=n, neighbourhood_size=n - 1, threshold=n // 2 + 1, modulus_bits=BITS,
                          vector_length=16)
    rng = np.random.default_rng(8)
    run = _Round(config, {node: rng.integers(0, M, 16, dtype=np.uint64) for node in range(n)})
    run.setup_and_share()
    run.mask()
    return run


def test_a_client_refuses_to_give_both_share_kinds_of_one_node() -> None:
    run = _masked_round()
    honest = run.server.unmask_requests()
    victim = 3
    greedy = {msg.STAGE: msg.UNMASK, msg.SURVIVING_IDS: [0, 1, 2, 3, 4], msg.DROPPED_IDS: [victim]}
    with pytest.raises(UnmaskRequestRefused, match=r"both .* of node\(s\) \[3\]"):
        run.clients[0].unmask(greedy)
    # the same client, asked again (now honestly), stays shut: a stage runs once
    with pytest.raises(ProtocolViolation, match="each stage runs once"):
        run.clients[0].unmask(honest[0])
    # another client answers the honest request: the refusal is not a blanket one
    reply = run.clients[1].unmask(honest[1])
    assert reply[msg.SEED_SHARE_OWNER_IDS] == [0, 1, 2, 3, 4] and reply[msg.KEY_SHARES] == []


def test_a_client_refuses_a_second_unmask_request_with_the_lists_swapped() -> None:
    run = _masked_round()
    request = run.server.unmask_requests()[2]
    run.clients[2].unmask(request)  # seed shares of everyone, honestly
    swapped = {msg.STAGE: msg.UNMASK, msg.SURVIVING_IDS: [0, 1, 2], msg.DROPPED_IDS: [3, 4]}
    with pytest.raises(ProtocolViolation):
        run.clients[2].unmask(swapped)


def test_a_client_refuses_to_reveal_its_own_mask_key() -> None:
    run = _masked_round()
    with pytest.raises(UnmaskRequestRefused, match="its own mask-key share"):
        run.clients[4].unmask({msg.STAGE: msg.UNMASK, msg.SURVIVING_IDS: [0, 1, 2], msg.DROPPED_IDS: [4]})


def test_a_client_refuses_substituted_keys_and_non_neighbours() -> None:
    config = SecAggConfig(num_clients=8, neighbourhood_size=2, threshold=2, modulus_bits=BITS, vector_length=4)
    server = SecAggServer(config, list(range(8)))
    clients = {node: SecAggClient(node) for node in range(8)}
    keys = {n: clients[n].setup(r) for n, r in server.setup_requests().items()}
    server.receive_public_keys(keys)
    requests = server.share_keys_requests()
    # the server swaps in its own key for the client's: refused
    forged = dict(requests[0])
    forged[msg.MASK_PUBLIC_KEYS] = [keys[1][msg.MASK_PUBLIC_KEY] if owner == 0 else key
                                    for owner, key in zip(forged[msg.KEY_OWNER_IDS], forged[msg.MASK_PUBLIC_KEYS])]
    with pytest.raises(ProtocolViolation, match="did not make"):
        clients[0].share_keys(forged)
    # the server adds a node the public graph does not join to the client: refused
    outsider = next(node for node in range(8) if node not in requests[1][msg.KEY_OWNER_IDS])
    widened = {key: list(value) if isinstance(value, list) else value for key, value in requests[1].items()}
    widened[msg.KEY_OWNER_IDS].append(outsider)
    widened[msg.MASK_PUBLIC_KEYS].append(keys[outsider][msg.MASK_PUBLIC_KEY])
    widened[msg.ENCRYPTION_PUBLIC_KEYS].append(keys[outsider][msg.ENCRYPTION_PUBLIC_KEY])
    with pytest.raises(ProtocolViolation, match="non-neighbours"):
        clients[1].share_keys(widened)
    # the honest request goes through
    assert clients[2].share_keys(requests[2])[msg.SHARE_RECIPIENT_IDS]


def test_a_client_refuses_shares_that_do_not_decrypt_and_bad_input_vectors() -> None:
    config = SecAggConfig(num_clients=3, neighbourhood_size=2, threshold=2, modulus_bits=BITS, vector_length=4)
    server = SecAggServer(config, [0, 1, 2])
    clients = {node: SecAggClient(node) for node in range(3)}
    server.receive_public_keys({n: clients[n].setup(r) for n, r in server.setup_requests().items()})
    server.receive_encrypted_shares({n: clients[n].share_keys(r) for n, r in server.share_keys_requests().items()})
    requests = server.masked_vector_requests()
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        clients[0].collect_masked(requests[0], np.zeros(5, dtype=np.uint64))
    with pytest.raises(ValueError, match="≥ m"):
        clients[0].collect_masked(requests[0], np.full(4, M, dtype=np.uint64))
    tampered = dict(requests[1])
    tampered[msg.ENCRYPTED_SHARES] = [c[:-4] + b"AAAA" for c in tampered[msg.ENCRYPTED_SHARES]]
    with pytest.raises(ProtocolViolation, match="do not decrypt"):
        clients[1].collect_masked(tampered, np.zeros(4, dtype=np.uint64))
    # a rejected input vector did not use up the stage: the valid one is masked
    assert clients[0].collect_masked(requests[0], np.zeros(4, dtype=np.uint64))[msg.MASKED_VECTOR].shape == (4,)


def test_stages_out_of_order_are_refused() -> None:
    client = SecAggClient(0)
    with pytest.raises(ProtocolViolation, match="expected after 'setup'"):
        client.share_keys({})


def test_with_a_nodes_mask_key_rebuilt_its_self_mask_still_hides_its_input() -> None:
    """The late-vector case: the server has rebuilt u's mask key (u looked dropped) and then gets y_u.

    Every pairwise mask of u is then known, and only PRG(b_u) stands between y_u and x_u.
    """
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares

    from fedrec.secure_aggregation.keys import (
        load_public_key,
        pairwise_mask_seed,
        public_key_bytes,
        secret_to_private_key,
    )
    from fedrec.secure_aggregation.masks import prg_mask

    run = _masked_round()
    victim, holders = 0, [1, 2, 3]  # t = 3 holders, each asked only for u's key share: each one complies
    key_shares = []
    for holder in holders:
        others = [node for node in range(5) if node not in (victim, holder)]
        reply = run.clients[holder].unmask({msg.STAGE: msg.UNMASK, msg.SURVIVING_IDS: [holder] + others[:2],
                                            msg.DROPPED_IDS: [victim]})
        key_shares.append(reply[msg.KEY_SHARES][0])
    victim_key = secret_to_private_key(combine_shares(key_shares))
    assert public_key_bytes(victim_key) == run.server._mask_public_keys[victim]  # the attack did get the key
    y = run.server_replies[victim][msg.MASKED_VECTOR].copy()
    for other in range(1, 5):
        peer = load_public_key(run.server._mask_public_keys[other], other)
        pairwise = prg_mask(pairwise_mask_seed(victim_key, peer), 16, BITS)
        y = y - pairwise if victim > other else y + pairwise
    y &= np.uint64(M - 1)
    x = run.inputs[victim]
    # what is left is x_u + PRG(b_u): still nothing like x_u
    assert np.mean(y == x) < 0.2
