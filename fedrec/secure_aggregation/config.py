"""Parameters of one SecAgg+ round, checked before any key is generated.

=====================  ======  ==========================================================
parameter              symbol  meaning
=====================  ======  ==========================================================
``num_clients``        n       clients sampled for the round (the graph's nodes)
``neighbourhood_size`` k       SecAgg+ degree; ``k ≥ n − 1`` means the complete graph
``threshold``          t       shares needed to rebuild a secret (Shamir threshold)
``modulus_bits``       b       inputs, masks and the sum live in Z_m, m = 2^b
``vector_length``      L       entries per input vector
=====================  ======  ==========================================================

Rules (each broken one is a ``ValueError`` that says which):

* ``n ≥ 2``; ``L ≥ 1``; ``1 ≤ b ≤ 64`` (vectors are ``uint64``; m = 2^b divides 2^64, so
  numpy's wrapping ``uint64`` arithmetic followed by ``& (m − 1)`` is exact arithmetic in Z_m).
* ``k ≥ 1``, and even when ``k < n − 1`` (see :mod:`.graph`). The effective degree is
  ``d = min(k, n − 1)`` and a share group has ``g = d + 1`` members.
* ``2 ≤ t ≤ g``: ``t = 1`` would make every share the secret itself, ``t > g`` could never
  be reached, even with no dropouts.
* ``2t > g`` (a strict majority of each share group). Two disjoint sets of holders could
  otherwise both reach ``t``: a server telling one half "u dropped" and the other half
  "u survived" would collect both ``u``'s mask key and its self-mask seed, and unmask
  ``u``'s vector (Bonawitz et al. 2017, §4: ``t > n/2``).

Each share group survives ``g − t`` dropouts among its members; that is the dropout
tolerance of the round.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from .graph import build_neighbourhoods

MAX_MODULUS_BITS = 64


@dataclass(frozen=True)
class SecAggConfig:
    """The public parameters every client of a round receives in the setup stage."""

    num_clients: int
    neighbourhood_size: int
    threshold: int
    modulus_bits: int
    vector_length: int

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        n, k, t = self.num_clients, self.neighbourhood_size, self.threshold
        if n < 2:
            raise ValueError(f"num_clients must be ≥ 2 (a sum of one input is that input), got {n}")
        if self.vector_length < 1:
            raise ValueError(f"vector_length must be ≥ 1, got {self.vector_length}")
        if not 1 <= self.modulus_bits <= MAX_MODULUS_BITS:
            raise ValueError(f"modulus_bits must be in [1, {MAX_MODULUS_BITS}], got {self.modulus_bits}")
        if k < 1:
            raise ValueError(f"neighbourhood_size must be ≥ 1, got {k}")
        if k < n - 1 and k % 2:
            raise ValueError(f"neighbourhood_size below n − 1 = {n - 1} must be even (a ring joins k/2 nodes "
                             f"on each side), got {k}")
        g = self.share_group_size
        if t < 2:
            raise ValueError(f"threshold must be ≥ 2 (with t = 1 every share is the secret itself), got {t}")
        if t > g:
            raise ValueError(f"threshold {t} exceeds the share group size {g} (= min(k, n − 1) + 1 with "
                             f"n = {n}, k = {k}): no secret could ever be rebuilt")
        if 2 * t <= g:
            raise ValueError(f"threshold {t} must be a strict majority of the share group size {g} (2t > g): "
                             "otherwise two disjoint sets of holders could each rebuild one secret of the "
                             "same node and the server could unmask its vector")

    @property
    def modulus(self) -> int:
        """m = 2^b."""
        return 1 << self.modulus_bits

    @property
    def degree(self) -> int:
        """d = min(k, n − 1): the number of neighbours of every node."""
        return min(self.neighbourhood_size, self.num_clients - 1)

    @property
    def is_complete_graph(self) -> bool:
        return self.degree == self.num_clients - 1

    @property
    def share_group_size(self) -> int:
        """g = d + 1: a node and its neighbours."""
        return self.degree + 1

    @property
    def tolerated_dropouts_per_group(self) -> int:
        """g − t: holders a share group may lose and still rebuild its secrets."""
        return self.share_group_size - self.threshold

    def neighbourhoods(self, node_ids: Sequence[int], graph_seed: bytes) -> dict[int, frozenset[int]]:
        """The round's graph (see :func:`.graph.build_neighbourhoods`), for exactly ``n`` nodes."""
        if len(node_ids) != self.num_clients:
            raise ValueError(f"the config is for {self.num_clients} clients, got {len(node_ids)} node ids")
        return build_neighbourhoods(node_ids, self.neighbourhood_size, graph_seed)

    def to_record(self) -> dict[str, int]:
        """The fields as a flat ``str → int`` dict (a Flower ``ConfigRecord``'s shape)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "SecAggConfig":
        """Read the fields back from a record (extra keys are ignored), validating them."""
        fields = cls.__dataclass_fields__
        missing = [name for name in fields if name not in record]
        if missing:
            raise ValueError(f"the SecAgg+ config record lacks {', '.join(missing)}")
        return cls(**{name: record[name] for name in fields})
