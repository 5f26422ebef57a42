"""One client's side of a SecAgg+ round (Bell et al. 2020, on Bonawitz et al. 2017).

The client holds ``x_u ∈ Z_m^L`` and wants the server to learn only ``Σ_{u∈U} x_u mod m``
over the clients ``U`` whose masked vectors reach the server. Four stages, each one method
that takes the server's request and returns the reply (plain dicts, see :mod:`.messages`):

0. :meth:`SecAggClient.setup` — read the config, rebuild the public graph ``N(u)`` from the
   seed, make the mask key pair ``(s_u^SK, s_u^PK)`` and the encryption key pair
   ``(c_u^SK, c_u^PK)``; reply with both public keys.
1. :meth:`SecAggClient.share_keys` — receive the public keys of the share group
   ``G = {u} ∪ (N(u) ∩ U_1)``; draw the self-mask seed ``b_u`` (32 random bytes); split
   ``b_u`` and ``s_u^SK`` into ``|G|`` Shamir shares with threshold ``t`` (Flower's
   ``create_shares``); keep one of each, and send each other member ``v`` its pair of
   shares encrypted under ``KDF(ECDH(c_u^SK, c_v^PK))`` (Fernet), so the server that routes
   them cannot read them.
2. :meth:`SecAggClient.collect_masked` — decrypt the shares the others sent, and return
   (as the narrowest unsigned dtype holding Z_m: ``uint32`` for 20 bits)

   ``y_u = x_u + PRG(b_u) + Σ_{v∈S, u>v} PRG(s_uv) − Σ_{v∈S, u<v} PRG(s_uv)  (mod m)``

   where ``S`` are the group members whose shares arrived and ``s_uv`` the ECDH seed of
   the mask key pairs. For a pair of survivors the two ``PRG(s_uv)`` cancel in the sum;
   ``PRG(b_u)`` makes ``y_u`` uniform on ``Z_m^L`` even when every neighbour's
   ``s_uv`` becomes known (a dropped neighbour's key is rebuilt in stage 3).
3. :meth:`SecAggClient.unmask` — the server names, among the nodes whose shares ``u``
   holds, the survivors (sent ``y``) and the dropped (shared keys but sent no ``y``);
   ``u`` returns its share of ``b_v`` for each survivor (so ``PRG(b_v)`` can be removed)
   and its share of ``s_v^SK`` for each dropped node (so the dropped node's pairwise masks
   left in the survivors' vectors can be removed).

The refusal that protects ``x_u``: with both ``b_v`` and ``s_v^SK`` the server could
strip every mask from ``y_v`` and read ``x_v``. So the client refuses
(:class:`UnmaskRequestRefused`) an unmask request that names one node both surviving and
dropped, one that calls the client itself dropped (it did send ``y_u``), and any second
unmask request (the stages run once, in order: the server cannot ask again with the lists
swapped). With ``2t > |G|`` (see :mod:`.config`) the server also cannot collect the two
kinds from two disjoint halves of a group.

Threat model: an honest-but-curious server and clients, plus a server that may ask for
the wrong shares (refused above). Not covered: a server that substitutes public keys in
stage 1 (Bonawitz et al.'s malicious variant signs them with a PKI) or tells different
clients different survivor lists (their consistency-check round); Flower's node
authentication over TLS is what binds a reply to a node.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from cryptography.fernet import InvalidToken
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.common.secure_aggregation.crypto.shamir import create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt
from flwr.common.secure_aggregation.secaggplus_utils import (
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)

from . import messages as msg
from .config import SecAggConfig
from .errors import ProtocolViolation, UnmaskRequestRefused
from .keys import (
    channel_key,
    load_public_key,
    new_key_pair,
    pairwise_mask_seed,
    private_key_to_secret,
    public_key_bytes_of,
    secret_to_private_key,
)
from .masks import SEED_BYTES, check_vector, prg_mask, reduce_mod, wire_dtype


def _node_ids(value: object, what: str) -> list[int]:
    """A list of distinct non-negative ints, else :class:`ProtocolViolation`."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ProtocolViolation(f"{what} must be a list of node ids")
    ids = [int(v) for v in value]
    if len(set(ids)) != len(ids) or any(v < 0 for v in ids):
        raise ProtocolViolation(f"{what} must hold distinct non-negative node ids")
    return ids


def _bytes_list(value: object, length: int, what: str) -> list[bytes]:
    if not isinstance(value, (list, tuple)) or len(value) != length or not all(isinstance(v, bytes) for v in value):
        raise ProtocolViolation(f"{what} must be a list of {length} byte strings")
    return list(value)


class SecAggClient:
    """The state machine of one client for one round; make a new one every round.

    The methods must be called in the order ``setup``, ``share_keys``, ``collect_masked``,
    ``unmask``, each once; anything else is a :class:`ProtocolViolation`.
    """

    def __init__(self, node_id: int) -> None:
        self.node_id = int(node_id)
        self._last_stage: str | None = None
        self._config: SecAggConfig | None = None
        self._neighbours: frozenset[int] = frozenset()
        self._mask_private_key: ec.EllipticCurvePrivateKey | None = None
        self._encryption_private_key: ec.EllipticCurvePrivateKey | None = None
        self._mask_public_key = b""
        self._encryption_public_key = b""
        self._self_mask_seed: bytes | None = None
        self._peer_mask_keys: dict[int, ec.EllipticCurvePublicKey] = {}
        self._channel_keys: dict[int, bytes] = {}
        # the shares this client holds, by the node whose secret they are a share of
        self._seed_shares: dict[int, bytes] = {}
        self._key_shares: dict[int, bytes] = {}

    @property
    def config(self) -> SecAggConfig:
        if self._config is None:
            raise ProtocolViolation("the setup stage has not run")
        return self._config

    def _enter(self, stage: str) -> None:
        expected_previous = None if stage == msg.SETUP else msg.STAGES[msg.STAGES.index(stage) - 1]
        if self._last_stage != expected_previous:
            done = self._last_stage or "nothing"
            raise ProtocolViolation(f"node {self.node_id}: stage '{stage}' requested after '{done}' "
                                    f"(expected after '{expected_previous or 'nothing'}'); each stage runs once, in order")
        self._last_stage = stage

    # -- stage 0 -----------------------------------------------------------------------
    def setup(self, request: msg.Message) -> msg.Message:
        """Read the config and graph; make both key pairs; reply with the public keys."""
        self._enter(msg.SETUP)
        try:
            config = SecAggConfig.from_record(request)
        except ValueError as error:
            raise ProtocolViolation(f"node {self.node_id}: bad SecAgg+ config: {error}") from None
        node_ids = _node_ids(msg.require(request, msg.NODE_IDS, msg.SETUP), msg.NODE_IDS)
        if self.node_id not in node_ids:
            raise ProtocolViolation(f"node {self.node_id} is not among the round's node ids")
        graph_seed = msg.require(request, msg.GRAPH_SEED, msg.SETUP)
        try:
            neighbourhoods = config.neighbourhoods(node_ids, graph_seed)
        except ValueError as error:
            raise ProtocolViolation(f"node {self.node_id}: {error}") from None
        self._config = config
        self._neighbours = neighbourhoods[self.node_id]
        self._mask_private_key, self._mask_public_key = new_key_pair()
        self._encryption_private_key, self._encryption_public_key = new_key_pair()
        return {msg.MASK_PUBLIC_KEY: self._mask_public_key, msg.ENCRYPTION_PUBLIC_KEY: self._encryption_public_key}

    # -- stage 1 -----------------------------------------------------------------------
    def share_keys(self, request: msg.Message) -> msg.Message:
        """Shamir-share ``b_u`` and ``s_u^SK`` over the share group; reply with one encrypted pair per member."""
        self._enter(msg.SHARE_KEYS)
        config, me = self.config, self.node_id
        owners = _node_ids(msg.require(request, msg.KEY_OWNER_IDS, msg.SHARE_KEYS), msg.KEY_OWNER_IDS)
        mask_keys = _bytes_list(msg.require(request, msg.MASK_PUBLIC_KEYS, msg.SHARE_KEYS), len(owners),
                                msg.MASK_PUBLIC_KEYS)
        encryption_keys = _bytes_list(msg.require(request, msg.ENCRYPTION_PUBLIC_KEYS, msg.SHARE_KEYS), len(owners),
                                      msg.ENCRYPTION_PUBLIC_KEYS)
        strangers = set(owners) - self._neighbours - {me}
        if strangers:
            raise ProtocolViolation(f"node {me}: keys of non-neighbours {sorted(strangers)} (the public graph "
                                    "does not join them to this node)")
        if me not in owners:
            raise ProtocolViolation(f"node {me}: its own public keys are missing from the share group")
        mine = owners.index(me)
        if (mask_keys[mine], encryption_keys[mine]) != (self._mask_public_key, self._encryption_public_key):
            raise ProtocolViolation(f"node {me}: the server relayed public keys for this node that it did not make")
        if len(set(mask_keys) | set(encryption_keys)) != 2 * len(owners):
            raise ProtocolViolation(f"node {me}: some relayed public keys are identical")
        if len(owners) < config.threshold:
            raise ProtocolViolation(f"node {me}: share group of {len(owners)} is below the threshold "
                                    f"{config.threshold}: its secrets could never be rebuilt")
        assert self._mask_private_key is not None and self._encryption_private_key is not None
        for owner, mask_key, encryption_key in zip(owners, mask_keys, encryption_keys):
            if owner == me:
                continue
            self._peer_mask_keys[owner] = load_public_key(mask_key, owner)
            self._channel_keys[owner] = channel_key(self._encryption_private_key,
                                                    load_public_key(encryption_key, owner))

        self._self_mask_seed = os.urandom(SEED_BYTES)
        group = sorted(owners)
        seed_shares = create_shares(self._self_mask_seed, config.threshold, len(group))
        key_shares = create_shares(private_key_to_secret(self._mask_private_key), config.threshold, len(group))
        recipients: list[int] = []
        ciphertexts: list[bytes] = []
        for member, seed_share, key_share in zip(group, seed_shares, key_shares):
            if member == me:
                self._seed_shares[me], self._key_shares[me] = seed_share, key_share
                continue
            plaintext = share_keys_plaintext_concat(me, member, seed_share, key_share)
            recipients.append(member)
            ciphertexts.append(encrypt(self._channel_keys[member], plaintext))
        return {msg.SHARE_RECIPIENT_IDS: recipients, msg.ENCRYPTED_SHARES: ciphertexts}

    # -- stage 2 -----------------------------------------------------------------------
    def collect_masked(self, request: msg.Message, vector: np.ndarray | Sequence[int]) -> msg.Message:
        """Store the shares sent to this client; reply with ``y_u`` (see the module docstring)."""
        config, me = self.config, self.node_id
        x = check_vector(vector, config.vector_length, config.modulus_bits, f"node {me}'s input vector")
        self._enter(msg.COLLECT_MASKED)
        senders = _node_ids(msg.require(request, msg.SHARE_SENDER_IDS, msg.COLLECT_MASKED), msg.SHARE_SENDER_IDS)
        ciphertexts = _bytes_list(msg.require(request, msg.ENCRYPTED_SHARES, msg.COLLECT_MASKED), len(senders),
                                  msg.ENCRYPTED_SHARES)
        for sender, ciphertext in zip(senders, ciphertexts):
            if sender not in self._channel_keys:
                raise ProtocolViolation(f"node {me}: shares from node {sender}, which is not in its share group")
            try:
                plaintext = decrypt(self._channel_keys[sender], ciphertext)
            except InvalidToken:
                raise ProtocolViolation(f"node {me}: the shares from node {sender} do not decrypt") from None
            source, destination, seed_share, key_share = share_keys_plaintext_separate(plaintext)
            if (source, destination) != (sender, me):
                raise ProtocolViolation(f"node {me}: a share addressed {source} → {destination} arrived as "
                                        f"{sender} → {me}")
            self._seed_shares[sender], self._key_shares[sender] = seed_share, key_share
        if len(senders) + 1 < config.threshold:
            raise ProtocolViolation(f"node {me}: only {len(senders)} neighbours' shares arrived; with its own "
                                    f"that is below the threshold {config.threshold}")
        assert self._self_mask_seed is not None and self._mask_private_key is not None
        bits, length = config.modulus_bits, config.vector_length
        y = x
        y += prg_mask(self._self_mask_seed, length, bits)
        for neighbour in senders:
            pairwise = prg_mask(pairwise_mask_seed(self._mask_private_key, self._peer_mask_keys[neighbour]),
                                length, bits)
            if me > neighbour:
                y += pairwise
            else:
                y -= pairwise
        reduce_mod(y, bits)
        # the secrets live on only as shares now
        self._self_mask_seed = None
        self._mask_private_key = None
        self._encryption_private_key = None
        self._channel_keys.clear()
        return {msg.MASKED_VECTOR: y.astype(wire_dtype(bits))}

    # -- stage 3 -----------------------------------------------------------------------
    def unmask(self, request: msg.Message) -> msg.Message:
        """Reply with seed shares of the survivors and key shares of the dropped; refuse both for one node."""
        self._enter(msg.UNMASK)
        config, me = self.config, self.node_id
        surviving = _node_ids(msg.require(request, msg.SURVIVING_IDS, msg.UNMASK), msg.SURVIVING_IDS)
        dropped = _node_ids(msg.require(request, msg.DROPPED_IDS, msg.UNMASK), msg.DROPPED_IDS)
        both = set(surviving) & set(dropped)
        if both:
            raise UnmaskRequestRefused(
                f"node {me}: refused to reveal both the self-mask seed share and the mask-key share of node(s) "
                f"{sorted(both)}: together they would unmask an individual vector")
        if me in dropped:
            raise UnmaskRequestRefused(f"node {me}: refused to reveal its own mask-key share: it sent its masked "
                                       "vector, so it did not drop")
        unknown = (set(surviving) | set(dropped)) - set(self._seed_shares)
        if unknown:
            raise ProtocolViolation(f"node {me}: holds no shares of node(s) {sorted(unknown)}")
        if len(surviving) < config.threshold:
            raise ProtocolViolation(f"node {me}: only {len(surviving)} survivors in its share group, below the "
                                    f"threshold {config.threshold}")
        reply = {
            msg.SEED_SHARE_OWNER_IDS: surviving,
            msg.SEED_SHARES: [self._seed_shares[node] for node in surviving],
            msg.KEY_SHARE_OWNER_IDS: dropped,
            msg.KEY_SHARES: [self._key_shares[node] for node in dropped],
        }
        self._seed_shares.clear()
        self._key_shares.clear()
        return reply

    # -- keeping the state between messages --------------------------------------------
    def export_state(self) -> msg.Message:
        """Everything this client holds, as a flat dict of ints, strings, bytes and lists
        (a Flower ``ConfigRecord``'s shape): a ClientApp keeps it in the node's own state
        between the stages (it holds private keys and shares: it never leaves the node).
        :meth:`restore` rebuilds an equal client."""
        def ids_and_values(mapping: dict[int, bytes]) -> tuple[list[int], list[bytes]]:
            ids = sorted(mapping)
            return ids, [mapping[i] for i in ids]

        state: msg.Message = {
            "node_id": self.node_id,
            "last_stage": self._last_stage or "",
            "neighbours": sorted(self._neighbours),
            "mask_public_key": self._mask_public_key,
            "encryption_public_key": self._encryption_public_key,
        }
        if self._config is not None:
            state.update({f"config.{name}": value for name, value in self._config.to_record().items()})
        for name, key in (("mask_private_key", self._mask_private_key),
                          ("encryption_private_key", self._encryption_private_key)):
            if key is not None:
                state[name] = private_key_to_secret(key)
        if self._self_mask_seed is not None:
            state["self_mask_seed"] = self._self_mask_seed
        state["peer_ids"], peer_keys = ids_and_values(
            {node: public_key_bytes_of(key) for node, key in self._peer_mask_keys.items()})
        state["peer_mask_keys"] = peer_keys
        state["channel_ids"], state["channel_keys"] = ids_and_values(self._channel_keys)
        state["seed_share_ids"], state["seed_shares"] = ids_and_values(self._seed_shares)
        state["key_share_ids"], state["key_shares"] = ids_and_values(self._key_shares)
        return state

    @classmethod
    def restore(cls, state: msg.Message) -> "SecAggClient":
        """The client :meth:`export_state` described; ``ProtocolViolation`` for a malformed state."""
        try:
            client = cls(int(state["node_id"]))
            client._last_stage = str(state["last_stage"]) or None
            if client._last_stage is not None and client._last_stage not in msg.STAGES:
                raise ValueError(f"unknown stage {client._last_stage!r}")
            config = {key[len("config."):]: value for key, value in state.items() if key.startswith("config.")}
            client._config = SecAggConfig(**config) if config else None
            client._neighbours = frozenset(int(v) for v in state["neighbours"])
            client._mask_public_key = bytes(state["mask_public_key"])
            client._encryption_public_key = bytes(state["encryption_public_key"])
            if "mask_private_key" in state:
                client._mask_private_key = secret_to_private_key(state["mask_private_key"])
            if "encryption_private_key" in state:
                client._encryption_private_key = secret_to_private_key(state["encryption_private_key"])
            client._self_mask_seed = state.get("self_mask_seed")
            client._peer_mask_keys = {int(node): load_public_key(key, int(node))
                                      for node, key in _pairs(state, "peer_ids", "peer_mask_keys")}
            client._channel_keys = dict(_pairs(state, "channel_ids", "channel_keys"))
            client._seed_shares = dict(_pairs(state, "seed_share_ids", "seed_shares"))
            client._key_shares = dict(_pairs(state, "key_share_ids", "key_shares"))
        except (KeyError, TypeError, ValueError) as error:
            raise ProtocolViolation(f"a stored SecAgg+ client state is malformed: {error}") from None
        return client


def _pairs(state: msg.Message, ids_key: str, values_key: str) -> list[tuple[int, bytes]]:
    ids, values = list(state[ids_key]), list(state[values_key])
    if len(ids) != len(values) or not all(isinstance(v, bytes) for v in values):
        raise ValueError(f"'{ids_key}' and '{values_key}' do not pair up")
    return [(int(i), v) for i, v in zip(ids, values)]
