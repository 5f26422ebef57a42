"""The server's side of a SecAgg+ round: routing, dropout bookkeeping, unmasking the sum.

The server never sees an input. It keeps four nested sets of clients (Bonawitz et al.'s
``U_1 ⊇ U_2 ⊇ U_3 ⊇ U_4``), each the clients whose reply to a stage arrived and was
well-formed:

* ``U_1`` advertised public keys (stage 0);
* ``U_2`` sent encrypted shares (stage 1); the server forwards ``v``'s shares to ``u`` only
  when ``u`` and ``v`` sent shares to each other, so "u masks against v" is symmetric;
* ``U_3`` sent a masked vector ``y_u`` (stage 2) — these are the **survivors**: the result
  is ``Σ_{u∈U_3} x_u``;
* ``U_4`` answered the unmask request (stage 3).

Unmasking. With ``S_u`` the nodes ``u`` masked against (its forwarded share senders),

``Σ_{u∈U_3} y_u = Σ_{u∈U_3} x_u + Σ_{u∈U_3} PRG(b_u)
                 + Σ_{u∈U_3} Σ_{v∈S_u∖U_3} ±PRG(s_uv)    (mod m)``

because the pairwise masks of two survivors cancel. The server rebuilds ``b_u`` for every
survivor from the seed shares of ``U_4`` and ``s_v^SK`` for every dropped ``v ∈ U_2∖U_3``
that a survivor masked against, recomputes ``s_uv = KDF(ECDH(s_v^SK, s_u^PK))``, and
subtracts both kinds of masks. A rebuilt mask key is checked against the public key ``v``
advertised, so a wrong share cannot go unnoticed there.

Dropouts. Before any vector exists (after stages 0 and 1) a client whose share group has
fewer than ``t`` active members is left out (its secrets could never be rebuilt; the
client would refuse anyway), repeatedly until every active client's group reaches ``t``.
From stage 2 on every needed secret must keep ``t`` holders; otherwise
:class:`RoundCannotBeUnmasked` names the nodes and the round is lost. A reply that is
malformed (missing keys, wrong ids, a vector of the wrong shape or range) is treated as a
dropout and recorded in :attr:`SecAggServer.rejected`.

Instrumentation. The server holds vectors in exactly three places: each received masked
vector (added to the running sum and not kept), the masked sum, and the unmasked sum. Each
is passed to ``observe_vector(kind, node_id, vector)`` if given, with ``kind`` one of
:data:`MASKED_VECTOR`, :data:`MASKED_SUM`, :data:`UNMASKED_SUM`, so a test can check that
nothing else — in particular no unmasked individual input — ever reaches the server.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from flwr.common.secure_aggregation.crypto.shamir import combine_shares

from . import messages as msg
from .config import SecAggConfig
from .errors import ProtocolViolation, RoundCannotBeUnmasked
from .graph import GRAPH_SEED_BYTES
from .keys import load_public_key, pairwise_mask_seed, public_key_bytes, secret_to_private_key
from .masks import SEED_BYTES, check_vector, prg_mask, reduce_mod

MASKED_VECTOR = "masked_vector"
MASKED_SUM = "masked_sum"
UNMASKED_SUM = "unmasked_sum"

VectorObserver = Callable[[str, "int | None", np.ndarray], None]
Replies = Mapping[int, msg.Message]


class SecAggServer:
    """The server's state machine for one round over the sampled ``node_ids``.

    Per stage: ``*_requests()`` gives one request per active client; the caller delivers them
    and passes the replies that came back (``{node_id: reply}``; a missing node has dropped)
    to the matching ``receive_*``. :meth:`receive_unmask_shares` returns the sum.
    """

    def __init__(self, config: SecAggConfig, node_ids: Sequence[int], *, graph_seed: bytes | None = None,
                 observe_vector: VectorObserver | None = None) -> None:
        self.config = config
        self.node_ids = tuple(sorted(int(node) for node in node_ids))
        self.graph_seed = os.urandom(GRAPH_SEED_BYTES) if graph_seed is None else graph_seed
        self._neighbourhoods = config.neighbourhoods(self.node_ids, self.graph_seed)
        self._observe = observe_vector
        self._last_stage: str | None = None
        self._active: set[int] = set(self.node_ids)
        self._asked: set[int] = set()
        #: stage → the nodes lost in it (no reply, a rejected reply, or left out for a too-small group)
        self.dropped: dict[str, list[int]] = {stage: [] for stage in msg.STAGES}
        #: node → why its reply was refused
        self.rejected: dict[int, str] = {}
        self._mask_public_keys: dict[int, bytes] = {}
        self._encryption_public_keys: dict[int, bytes] = {}
        self._key_owners_sent: dict[int, list[int]] = {}
        self._ciphertexts: dict[int, dict[int, bytes]] = {}  # sender → recipient → shares
        self._masked_against: dict[int, frozenset[int]] = {}
        self._shared: frozenset[int] = frozenset()  # U_2
        self._survivors: frozenset[int] = frozenset()  # U_3
        self._masked_sum: np.ndarray | None = None
        self._unmask_asked: dict[int, tuple[list[int], list[int]]] = {}

    # -- bookkeeping -------------------------------------------------------------------
    @property
    def active(self) -> frozenset[int]:
        """The clients still in the round."""
        return frozenset(self._active)

    @property
    def survivors(self) -> tuple[int, ...]:
        """``U_3``: the clients whose inputs the result sums (known after stage 2)."""
        return tuple(sorted(self._survivors))

    def _begin(self, stage: str) -> None:
        expected_previous = None if stage == msg.SETUP else msg.STAGES[msg.STAGES.index(stage) - 1]
        if self._last_stage != expected_previous:
            raise RuntimeError(f"SecAgg+ server: stage '{stage}' requested after '{self._last_stage or 'nothing'}'")
        self._last_stage = stage

    def _requests(self, stage: str, make: Callable[[int], msg.Message]) -> dict[int, msg.Message]:
        self._begin(stage)
        self._asked = set(self._active)
        return {node: {msg.STAGE: stage, **make(node)} for node in sorted(self._active)}

    def _accept(self, stage: str, replies: Replies, parse: Callable[[int, msg.Message], None]) -> None:
        """Run ``parse`` on every reply; unasked senders are a caller bug, bad replies are dropouts."""
        strangers = set(replies) - self._asked
        if strangers:
            raise ValueError(f"SecAgg+ {stage}: replies from nodes that were not asked: {sorted(strangers)}")
        accepted: set[int] = set()
        for node in sorted(replies):
            try:
                parse(node, replies[node])
            except (ProtocolViolation, ValueError, TypeError) as error:
                self.rejected[node] = f"{stage}: {error}"
                continue
            accepted.add(node)
        self._drop(stage, self._asked - accepted)

    def _drop(self, stage: str, nodes: Iterable[int]) -> None:
        nodes = set(nodes) & self._active
        self._active -= nodes
        self.dropped[stage].extend(sorted(nodes))

    def _group(self, node: int) -> frozenset[int]:
        return self._neighbourhoods[node] | {node}

    def _leave_out_isolated(self, stage: str) -> None:
        """Drop, until none is left, active clients whose share group has fewer than ``t`` active members."""
        t = self.config.threshold
        while True:
            isolated = {node for node in self._active if len(self._group(node) & self._active) < t}
            if not isolated:
                break
            self._drop(stage, isolated)
        if not self._active:
            raise RoundCannotBeUnmasked(
                f"SecAgg+ {stage}: no client keeps {t} active members in its share group (threshold t = {t}, "
                f"dropped so far: {self._dropped_summary()}): the round cannot be unmasked")

    def _dropped_summary(self) -> str:
        return ", ".join(f"{stage} {len(nodes)}" for stage, nodes in self.dropped.items() if nodes) or "none"

    # -- stage 0 -----------------------------------------------------------------------
    def setup_requests(self) -> dict[int, msg.Message]:
        """The config, the sampled ids and the graph seed, to every sampled client."""
        common = {**self.config.to_record(), msg.NODE_IDS: list(self.node_ids), msg.GRAPH_SEED: self.graph_seed}
        return self._requests(msg.SETUP, lambda node: dict(common))

    def receive_public_keys(self, replies: Replies) -> None:
        """Record ``U_1`` and their two public keys each."""
        def parse(node: int, reply: msg.Message) -> None:
            mask_key = msg.require(reply, msg.MASK_PUBLIC_KEY, msg.SETUP)
            encryption_key = msg.require(reply, msg.ENCRYPTION_PUBLIC_KEY, msg.SETUP)
            if not isinstance(mask_key, bytes) or not isinstance(encryption_key, bytes):
                raise ProtocolViolation("public keys must be bytes")
            load_public_key(mask_key, node)
            load_public_key(encryption_key, node)
            self._mask_public_keys[node], self._encryption_public_keys[node] = mask_key, encryption_key

        self._accept(msg.SETUP, replies, parse)
        self._leave_out_isolated(msg.SETUP)

    # -- stage 1 -----------------------------------------------------------------------
    def share_keys_requests(self) -> dict[int, msg.Message]:
        """Each active client gets the public keys of its active share group (itself included)."""
        def make(node: int) -> msg.Message:
            owners = sorted(self._group(node) & self._active)
            self._key_owners_sent[node] = owners
            return {
                msg.KEY_OWNER_IDS: owners,
                msg.MASK_PUBLIC_KEYS: [self._mask_public_keys[owner] for owner in owners],
                msg.ENCRYPTION_PUBLIC_KEYS: [self._encryption_public_keys[owner] for owner in owners],
            }

        return self._requests(msg.SHARE_KEYS, make)

    def receive_encrypted_shares(self, replies: Replies) -> None:
        """Record ``U_2`` and the ciphertexts to forward; a reply must address exactly its group."""
        def parse(node: int, reply: msg.Message) -> None:
            recipients = msg.require(reply, msg.SHARE_RECIPIENT_IDS, msg.SHARE_KEYS)
            ciphertexts = msg.require(reply, msg.ENCRYPTED_SHARES, msg.SHARE_KEYS)
            expected = [owner for owner in self._key_owners_sent[node] if owner != node]
            if sorted(int(r) for r in recipients) != expected:
                raise ProtocolViolation(f"shares addressed to {sorted(recipients)}, expected {expected}")
            if len(ciphertexts) != len(recipients) or not all(isinstance(c, bytes) for c in ciphertexts):
                raise ProtocolViolation("one encrypted share (bytes) per recipient expected")
            self._ciphertexts[node] = {int(r): c for r, c in zip(recipients, ciphertexts)}

        self._accept(msg.SHARE_KEYS, replies, parse)
        self._leave_out_isolated(msg.SHARE_KEYS)

    # -- stage 2 -----------------------------------------------------------------------
    def masked_vector_requests(self) -> dict[int, msg.Message]:
        """Each active client gets the shares its active group members sent it (the set it will mask against)."""
        self._shared = frozenset(self._active)

        def make(recipient: int) -> msg.Message:
            senders = sorted(
                sender for sender in self._neighbourhoods[recipient] & self._active
                if recipient in self._ciphertexts[sender] and sender in self._ciphertexts[recipient])
            self._masked_against[recipient] = frozenset(senders)
            return {msg.SHARE_SENDER_IDS: senders,
                    msg.ENCRYPTED_SHARES: [self._ciphertexts[sender][recipient] for sender in senders]}

        requests = self._requests(msg.COLLECT_MASKED, make)
        self._ciphertexts.clear()
        return requests

    def receive_masked_vectors(self, replies: Replies) -> None:
        """Add each ``y_u`` to the running masked sum (no individual vector is kept); ``U_3`` are the survivors."""
        config = self.config
        total = np.zeros(config.vector_length, dtype=np.uint64)

        def parse(node: int, reply: msg.Message) -> None:
            masked = check_vector(msg.require(reply, msg.MASKED_VECTOR, msg.COLLECT_MASKED), config.vector_length,
                                  config.modulus_bits, f"node {node}'s masked vector")
            if self._observe is not None:
                self._observe(MASKED_VECTOR, node, masked)
            np.add(total, masked, out=total)

        self._accept(msg.COLLECT_MASKED, replies, parse)
        self._masked_sum = reduce_mod(total, config.modulus_bits)
        self._survivors = frozenset(self._active)
        if self._observe is not None:
            self._observe(MASKED_SUM, None, self._masked_sum)
        self._require_holders(msg.COLLECT_MASKED, self._active)

    # -- stage 3 -----------------------------------------------------------------------
    def _needed_secrets(self) -> tuple[list[int], list[int]]:
        """The survivors (their ``b_u`` is needed) and the dropped nodes some survivor masked against (their ``s_v^SK``)."""
        dropped = sorted({v for u in self._survivors for v in self._masked_against[u]} - self._survivors)
        return sorted(self._survivors), dropped

    def _holders(self, owner: int) -> set[int]:
        """The survivors holding a share of ``owner``'s secrets (``owner`` itself holds one if it survived)."""
        holders = {u for u in self._survivors if owner in self._masked_against[u]}
        if owner in self._survivors:
            holders.add(owner)
        return holders

    def _require_holders(self, stage: str, answering: Iterable[int]) -> None:
        answering = set(answering)
        t = self.config.threshold
        seeds_needed, keys_needed = self._needed_secrets()
        if not self._survivors:
            raise RoundCannotBeUnmasked(f"SecAgg+ {stage}: no masked vector arrived (dropped so far: "
                                        f"{self._dropped_summary()}): the round cannot be unmasked")
        short = {owner: len(self._holders(owner) & answering) for owner in seeds_needed + keys_needed}
        short = {owner: count for owner, count in short.items() if count < t}
        if short:
            detail = ", ".join(f"node {owner}: {count} of {t}" for owner, count in sorted(short.items())[:10])
            raise RoundCannotBeUnmasked(
                f"SecAgg+ {stage}: {len(short)} secret(s) needed for unmasking have fewer than t = {t} holders left "
                f"({detail}{', …' if len(short) > 10 else ''}; {len(self._survivors)} survivors, dropped so far: "
                f"{self._dropped_summary()}): the round cannot be unmasked")

    def unmask_requests(self) -> dict[int, msg.Message]:
        """Each survivor is asked, for the nodes whose shares it holds, seed shares of survivors and key shares of the dropped."""
        def make(node: int) -> msg.Message:
            held = self._masked_against[node] | {node}
            surviving = sorted(held & self._survivors)
            dropped = sorted(held - self._survivors)
            self._unmask_asked[node] = (surviving, dropped)
            return {msg.SURVIVING_IDS: surviving, msg.DROPPED_IDS: dropped}

        return self._requests(msg.UNMASK, make)

    def receive_unmask_shares(self, replies: Replies) -> np.ndarray:
        """Rebuild the needed secrets, remove every mask, and return ``Σ_{u∈U_3} x_u mod m`` (``uint64``)."""
        seed_shares: dict[int, list[bytes]] = {}
        key_shares: dict[int, list[bytes]] = {}

        def parse(node: int, reply: msg.Message) -> None:
            surviving, dropped = self._unmask_asked[node]
            got = {}
            for ids_key, shares_key, asked in ((msg.SEED_SHARE_OWNER_IDS, msg.SEED_SHARES, surviving),
                                               (msg.KEY_SHARE_OWNER_IDS, msg.KEY_SHARES, dropped)):
                ids = [int(i) for i in msg.require(reply, ids_key, msg.UNMASK)]
                shares = msg.require(reply, shares_key, msg.UNMASK)
                if ids != asked or len(shares) != len(ids) or not all(isinstance(s, bytes) for s in shares):
                    raise ProtocolViolation(f"'{ids_key}'/'{shares_key}' do not answer the request for {asked}")
                got[shares_key] = dict(zip(ids, shares))
            for owner, share in got[msg.SEED_SHARES].items():
                seed_shares.setdefault(owner, []).append(share)
            for owner, share in got[msg.KEY_SHARES].items():
                key_shares.setdefault(owner, []).append(share)

        self._accept(msg.UNMASK, replies, parse)
        self._require_holders(msg.UNMASK, self._active)
        return self._unmask(seed_shares, key_shares)

    def _rebuild(self, kind: str, owner: int, shares: list[bytes]) -> bytes:
        try:
            return combine_shares(shares[: self.config.threshold])
        except ValueError as error:
            raise RoundCannotBeUnmasked(f"SecAgg+ unmask: the {kind} of node {owner} does not rebuild from its "
                                        f"shares ({error}): a holder sent a wrong share") from None

    def _unmask(self, seed_shares: dict[int, list[bytes]], key_shares: dict[int, list[bytes]]) -> np.ndarray:
        assert self._masked_sum is not None
        bits, length = self.config.modulus_bits, self.config.vector_length
        seeds_needed, keys_needed = self._needed_secrets()
        result = self._masked_sum
        self._masked_sum = None
        for survivor in seeds_needed:
            seed = self._rebuild("self-mask seed", survivor, seed_shares[survivor])
            if len(seed) != SEED_BYTES:
                raise RoundCannotBeUnmasked(f"SecAgg+ unmask: node {survivor}'s rebuilt self-mask seed has "
                                            f"{len(seed)} bytes, not {SEED_BYTES}")
            result -= prg_mask(seed, length, bits)
        for gone in keys_needed:
            try:
                private_key = secret_to_private_key(self._rebuild("mask key", gone, key_shares[gone]))
            except ValueError as error:
                raise RoundCannotBeUnmasked(f"SecAgg+ unmask: node {gone}'s mask key does not rebuild: {error}") from None
            if public_key_bytes(private_key) != self._mask_public_keys[gone]:
                raise RoundCannotBeUnmasked(f"SecAgg+ unmask: node {gone}'s rebuilt mask key does not match the public "
                                            "key it advertised: a holder sent a wrong share")
            for survivor in sorted(u for u in self._survivors if gone in self._masked_against[u]):
                seed = pairwise_mask_seed(private_key, load_public_key(self._mask_public_keys[survivor], survivor))
                pairwise = prg_mask(seed, length, bits)
                # the survivor added +PRG(s_uv) when u > v and −PRG(s_uv) when u < v; take it back out
                if survivor > gone:
                    result -= pairwise
                else:
                    result += pairwise
        reduce_mod(result, bits)
        if self._observe is not None:
            self._observe(UNMASKED_SUM, None, result)
        return result
