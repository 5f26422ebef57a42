"""The SecAgg+ communication graph: who holds whose secret shares.

Bell et al. (2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead")
replace SecAgg's complete graph by a random ``k``-regular graph: each client masks its
vector only against its ``k`` neighbours and Shamir-shares its secrets only among them, so
the per-client cost is O(k + L) instead of O(n + L) while the masks still cancel in the
sum (every pair ``{u, v}`` on an edge adds ``+PRG(s_uv)`` once and ``−PRG(s_uv)`` once).

Construction (a random Harary graph, as in Bell et al. §3 and Flower's workflow): sort
the sampled node ids, permute them with a generator seeded by a public 32-byte seed the
server sends in the setup stage, place them on a ring in that order, and join each node to
the ``k/2`` nodes on either side. For ``k < n − 1`` this needs ``k`` even and gives a
``k``-regular graph; for ``k ≥ n − 1`` every pair is joined (SecAgg's complete graph).

The seed is public and only the shape of the graph depends on it, so a non-cryptographic
generator (numpy's PCG64) is fine here; every client rebuilds the graph from the same
seed and ids and so can check that the server routes keys only along its edges. (An
actively malicious server that picks the seed to isolate a victim is outside this model;
Bell et al. derive the seed jointly for that.)

A node's *share group* is ``{u} ∪ N(u)``: ``u`` keeps one of its own shares, as Flower
does, so a group has ``k + 1`` members and ``t ≤ k + 1``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

GRAPH_SEED_BYTES = 32

Neighbourhoods = Mapping[int, frozenset[int]]


def build_neighbourhoods(node_ids: Sequence[int], neighbourhood_size: int, graph_seed: bytes) -> dict[int, frozenset[int]]:
    """``N(u)`` (without ``u``) for every node, from the public ``graph_seed``.

    ``neighbourhood_size ≥ len(node_ids) − 1`` gives the complete graph; otherwise it must be
    even (the ring joins ``k/2`` nodes on each side).
    """
    ids = sorted(int(node) for node in node_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("node ids must be distinct")
    if len(ids) < 2:
        raise ValueError(f"a SecAgg+ graph needs at least 2 nodes, got {len(ids)}")
    if not isinstance(graph_seed, bytes) or len(graph_seed) != GRAPH_SEED_BYTES:
        raise ValueError(f"the graph seed is {GRAPH_SEED_BYTES} bytes")
    n = len(ids)
    if neighbourhood_size >= n - 1:
        everyone = frozenset(ids)
        return {node: everyone - {node} for node in ids}
    if neighbourhood_size < 2 or neighbourhood_size % 2:
        raise ValueError(f"a k-regular ring graph needs an even k ≥ 2 (below n − 1 = {n - 1}), got {neighbourhood_size}")
    rng = np.random.default_rng(int.from_bytes(graph_seed, "little"))
    ring = [ids[i] for i in rng.permutation(n)]
    half = neighbourhood_size // 2
    return {
        node: frozenset(ring[(position + offset) % n] for offset in range(-half, half + 1) if offset)
        for position, node in enumerate(ring)
    }


def share_group(neighbourhoods: Neighbourhoods, node: int) -> frozenset[int]:
    """``{u} ∪ N(u)``: the nodes that receive a share of ``u``'s secrets."""
    return neighbourhoods[node] | {node}
