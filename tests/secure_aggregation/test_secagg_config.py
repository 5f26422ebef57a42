"""SecAgg+ parameters are refused with the reason, and the public graph is what the paper describes."""

from __future__ import annotations

import os

import pytest

from fedrec.secure_aggregation import SecAggConfig
from fedrec.secure_aggregation.graph import build_neighbourhoods


def _config(**overrides: int) -> SecAggConfig:
    fields = dict(num_clients=10, neighbourhood_size=9, threshold=6, modulus_bits=20, vector_length=8)
    fields.update(overrides)
    return SecAggConfig(**fields)


def test_a_valid_config_reports_its_derived_sizes() -> None:
    complete = _config()
    assert (complete.modulus, complete.degree, complete.share_group_size) == (2 ** 20, 9, 10)
    assert complete.is_complete_graph and complete.tolerated_dropouts_per_group == 4
    sparse = _config(neighbourhood_size=4, threshold=3)
    assert (sparse.degree, sparse.share_group_size, sparse.is_complete_graph) == (4, 5, False)
    # k above n − 1 is the complete graph, not an error
    assert _config(neighbourhood_size=50).degree == 9
    assert SecAggConfig.from_record(complete.to_record()) == complete


@pytest.mark.parametrize("overrides, reason", [
    ({"threshold": 11}, "exceeds the share group size 10"),
    ({"neighbourhood_size": 4, "threshold": 6}, "exceeds the share group size 5"),
    ({"threshold": 5}, "strict majority"),
    ({"threshold": 1}, "threshold must be ≥ 2"),
    ({"num_clients": 1, "threshold": 2}, "num_clients must be ≥ 2"),
    ({"neighbourhood_size": 5, "threshold": 4}, "must be even"),
    ({"neighbourhood_size": 0}, "neighbourhood_size must be ≥ 1"),
    ({"modulus_bits": 0}, r"modulus_bits must be in \[1, 64\]"),
    ({"modulus_bits": 65}, r"modulus_bits must be in \[1, 64\]"),
    ({"vector_length": 0}, "vector_length must be ≥ 1"),
    ({"threshold": 6.0}, "threshold must be an int"),
    ({"modulus_bits": True}, "modulus_bits must be an int"),
])
def test_bad_parameters_are_refused_with_the_reason(overrides: dict, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        _config(**overrides)


def test_a_record_missing_a_field_is_refused() -> None:
    record = _config().to_record()
    del record["threshold"]
    with pytest.raises(ValueError, match="lacks threshold"):
        SecAggConfig.from_record(record)


def test_the_sparse_graph_is_k_regular_symmetric_and_fixed_by_the_public_seed() -> None:
    nodes = [7 * i + 3 for i in range(30)]
    seed = os.urandom(32)
    graph = build_neighbourhoods(nodes, 6, seed)
    assert set(graph) == set(nodes)
    for node, neighbours in graph.items():
        assert len(neighbours) == 6 and node not in neighbours
        assert all(node in graph[other] for other in neighbours)
    # every client rebuilds the same graph from the seed, whatever order it got the ids in
    assert build_neighbourhoods(list(reversed(nodes)), 6, seed) == graph
    # and another seed gives another graph (the ring order is a random permutation)
    assert build_neighbourhoods(nodes, 6, os.urandom(32)) != graph


def test_k_at_least_n_minus_1_is_the_complete_graph() -> None:
    nodes = list(range(8))
    for k in (7, 12):
        graph = build_neighbourhoods(nodes, k, bytes(32))
        assert all(graph[node] == frozenset(nodes) - {node} for node in nodes)


def test_graph_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="distinct"):
        build_neighbourhoods([1, 1, 2], 2, bytes(32))
    with pytest.raises(ValueError, match="32 bytes"):
        build_neighbourhoods([1, 2, 3], 2, b"short")
    with pytest.raises(ValueError, match="number of node ids|10 clients"):
        _config().neighbourhoods(list(range(9)), bytes(32))
