"""Key agreement and secret (de)serialisation, on Flower's primitives.

Each client makes two elliptic-curve key pairs per round (Flower's
``generate_key_pairs``: NIST P-384):

* the **mask key pair** ``(s_u^SK, s_u^PK)``: ECDH between ``u`` and ``v`` gives the
  pairwise mask seed ``s_uv = HKDF(ECDH(s_u^SK, s_v^PK)) = HKDF(ECDH(s_v^SK, s_u^PK))``
  (Flower's ``generate_shared_key``), the same on both sides — and, once ``s_v^SK`` is
  rebuilt from shares, on the server's side too, which is how a dropped node's masks are
  removed;
* the **encryption key pair** ``(c_u^SK, c_u^PK)``: ECDH gives the key of the Fernet
  channel (AES-128-CBC + HMAC-SHA256) that carries ``u``'s shares to ``v`` through the
  server, which sees only ciphertexts.

The mask private key is Shamir-shared as its raw 48-byte scalar (not Flower's 185-byte
PEM): four 16-byte Shamir chunks instead of twelve, which is most of the sharing cost.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric import ec
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.supercore.primitives.asymmetric import bytes_to_public_key, generate_key_pairs, public_key_to_bytes

from .errors import ProtocolViolation

_CURVE = ec.SECP384R1()
_SCALAR_BYTES = (_CURVE.key_size + 7) // 8


def new_key_pair() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A fresh key pair: the private key and the PEM bytes of the public key."""
    private_key, public_key = generate_key_pairs()
    return private_key, public_key_to_bytes(public_key)


def load_public_key(public_key: bytes, owner: int) -> ec.EllipticCurvePublicKey:
    """Parse a peer's PEM public key; a key that does not parse or is on another curve is refused."""
    try:
        key = bytes_to_public_key(public_key)
    except (ValueError, TypeError) as error:
        raise ProtocolViolation(f"node {owner}'s public key does not parse: {error}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != _CURVE.name:
        raise ProtocolViolation(f"node {owner}'s public key is not a {_CURVE.name} key")
    return key


def pairwise_mask_seed(private_key: ec.EllipticCurvePrivateKey, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
    """``s_uv``: the 32-byte seed of the mask shared by two nodes (symmetric in u, v)."""
    return base64.urlsafe_b64decode(generate_shared_key(private_key, peer_public_key))


def channel_key(private_key: ec.EllipticCurvePrivateKey, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The Fernet key of the share channel between two nodes (symmetric in u, v)."""
    return generate_shared_key(private_key, peer_public_key)


def private_key_to_secret(private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """The private scalar as 48 big-endian bytes: the secret that is Shamir-shared."""
    return private_key.private_numbers().private_value.to_bytes(_SCALAR_BYTES, "big")


def secret_to_private_key(secret: bytes) -> ec.EllipticCurvePrivateKey:
    """Inverse of :func:`private_key_to_secret`."""
    if len(secret) != _SCALAR_BYTES:
        raise ValueError(f"a {_CURVE.name} private scalar is {_SCALAR_BYTES} bytes, got {len(secret)}")
    return ec.derive_private_key(int.from_bytes(secret, "big"), _CURVE)


def public_key_bytes(private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """PEM bytes of the public key that belongs to ``private_key``."""
    return public_key_to_bytes(private_key.public_key())


def public_key_bytes_of(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """A public key's wire bytes (what :func:`load_public_key` reads back)."""
    return public_key_to_bytes(public_key)
