"""Signatures for the privacy ledger: the server's Ed25519 head signatures and the devices'
ECDSA countersignatures of their releases. Depends on ``cryptography`` only (no Flower).

Server side. :class:`LedgerSigner` holds an Ed25519 key in a file of exactly 32 raw
bytes (the private scalar seed), ``$FEDREC_HOME/ledger-signing.key`` by default
(:func:`default_signing_key_path`; ``FEDREC_HOME`` defaults to ``~/.fedrec``). The file is
created atomically with mode 0600 in a 0700 directory when missing, and refused when it
is readable by group or others or is not 32 bytes. The server signs each round's ledger
head with it (:meth:`fedrec.core.privacy.ledger.PrivacyLedger.sign_head`) and writes the
public key as hex text (:func:`write_public_key`) as ``RUN/ledger-signing.pub``; an
auditor who wants more than self-consistency keeps a copy of the public key obtained
out of band and passes it to ``fedrec audit --verify-key``.

Device side. A deployed device holds its SuperNode authentication key, an OpenSSH ECDSA
P-384 private key (``supernodes/NAME``, public ``NAME.pub``, see
:mod:`fedrec.runtime.certs`). It countersigns each release it makes:
:func:`release_statement` is the canonical statement, :func:`sign_release` signs it
(DER ECDSA with SHA-384, hex), :func:`verify_release` checks it against the device's
OpenSSH public key line.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNING_KEY_FILE = "ledger-signing.key"
PUBLIC_KEY_FILE = "ledger-signing.pub"  # in a run directory: the key the run's heads were signed with
HOME_ENV = "FEDREC_HOME"
_KEY_BYTES = 32
_SIGNATURE_BYTES = 64


class SigningError(ValueError):
    """A key file is missing, malformed or too open, or a key cannot be used."""


def default_signing_key_path() -> Path:
    """``$FEDREC_HOME/ledger-signing.key``, ``FEDREC_HOME`` defaulting to ``~/.fedrec``."""
    home = os.environ.get(HOME_ENV)
    return (Path(home).expanduser() if home else Path.home() / ".fedrec") / SIGNING_KEY_FILE


class LedgerSigner:
    """An Ed25519 signing key for ledger heads."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def generate(cls) -> "LedgerSigner":
        """A fresh key held in memory only (tests; a run that keeps no key)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> "LedgerSigner":
        """The key in ``path`` (32 raw bytes, mode 0600), created there when missing."""
        path = Path(path).expanduser()
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = Ed25519PrivateKey.generate()
            raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
            _write_new(path, raw)
            return cls(key)
        try:
            mode = path.stat().st_mode
        except OSError as error:
            raise SigningError(f"{path}: cannot read the ledger signing key ({error.strerror})") from error
        if not stat.S_ISREG(mode):
            raise SigningError(f"{path}: the ledger signing key is not a regular file")
        if mode & 0o077:
            raise SigningError(f"{path}: the ledger signing key is readable or writable by group/others "
                               f"(mode {stat.S_IMODE(mode):04o}); refusing to use it — run `chmod 600 {path}` "
                               "if nobody else could have read it, or delete it to make a new one")
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise SigningError(f"{path}: cannot read the ledger signing key ({error.strerror})") from error
        if len(raw) != _KEY_BYTES:
            raise SigningError(f"{path}: not a ledger signing key (expected {_KEY_BYTES} raw bytes, "
                               f"found {len(raw)})")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def public_key_hex(self) -> str:
        """The raw 32-byte public key as 64 hex digits."""
        return self._key.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw).hex()

    def sign(self, data: bytes) -> str:
        """Ed25519 signature of ``data`` as 128 hex digits."""
        return self._key.sign(bytes(data)).hex()


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600: a temporary file, fsynced, then linked in
    place (never replacing a key another process created meanwhile)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError as error:
            raise SigningError(f"{path}: created by another process meanwhile; retry") from error
    finally:
        tmp.unlink(missing_ok=True)


def verify_ed25519(public_key_hex: str, data: bytes, signature_hex: str) -> bool:
    """True when ``signature_hex`` is ``public_key_hex``'s Ed25519 signature of ``data``;
    False for a wrong signature and for malformed key or signature text."""
    try:
        key = bytes.fromhex(public_key_hex)
        signature = bytes.fromhex(signature_hex)
    except (ValueError, TypeError):
        return False
    if len(key) != _KEY_BYTES or len(signature) != _SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, bytes(data))
    except (InvalidSignature, ValueError):
        return False
    return True


def write_public_key(path: Path, public_key_hex: str) -> None:
    """Write the public key as one line of hex (``read_public_key`` reads it back)."""
    _check_public_hex(public_key_hex, Path(path))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(public_key_hex + "\n", encoding="ascii")
    os.replace(tmp, path)


def read_public_key(path: Path) -> str:
    """The hex public key in ``path`` (as :func:`write_public_key` writes it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError as error:
        raise SigningError(f"{path}: no such public key file") from error
    except (OSError, UnicodeDecodeError) as error:
        raise SigningError(f"{path}: cannot read the public key ({error})") from error
    _check_public_hex(text, path)
    return text.lower()


def _check_public_hex(text: str, path: Path) -> None:
    try:
        raw = bytes.fromhex(text)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != _KEY_BYTES:
        raise SigningError(f"{path}: not a ledger public key (expected {2 * _KEY_BYTES} hex digits on one line)")


# --- device countersignatures -----------------------------------------------------------

def release_statement(run_id: str, round: int, who_user: str, relation: str, noise_multiplier: float,
                      sample_rate: float, steps: int, epsilon: float, release: str) -> bytes:
    """The canonical bytes a device signs for one release: sorted-key JSON, no spaces,
    ASCII, floats written as ``repr`` strings (exact; ``inf`` included)."""
    payload = {"run_id": str(run_id), "round": int(round), "who": str(who_user), "relation": str(relation),
               "noise_multiplier": repr(float(noise_multiplier)), "sample_rate": repr(float(sample_rate)),
               "steps": int(steps), "epsilon": repr(float(epsilon)), "release": str(release)}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign_release(private_key_path: Path, statement: bytes) -> str:
    """ECDSA-SHA384 signature (DER, hex) of ``statement`` by the OpenSSH EC private key in
    ``private_key_path`` (the SuperNode authentication key)."""
    path = Path(private_key_path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SigningError(f"{path}: cannot read the device key ({error.strerror})") from error
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, UnsupportedAlgorithm, TypeError) as error:
        raise SigningError(f"{path}: not an unencrypted OpenSSH private key ({error})") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SigningError(f"{path}: the device key must be an ECDSA key, got {type(key).__name__}")
    return key.sign(bytes(statement), ec.ECDSA(hashes.SHA384())).hex()


def load_device_public_key(openssh_public_key_text: str) -> ec.EllipticCurvePublicKey:
    """An OpenSSH ``ecdsa-sha2-nistp…`` public key line as a key (``SigningError`` otherwise)."""
    try:
        key = serialization.load_ssh_public_key(openssh_public_key_text.strip().encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as error:
        raise SigningError(f"not an OpenSSH public key ({error})") from error
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SigningError(f"a device key must be ECDSA, got {type(key).__name__}")
    return key


def verify_release(openssh_public_key_text: str, statement: bytes, signature_hex: str) -> bool:
    """True when ``signature_hex`` is the device key's ECDSA-SHA384 signature of ``statement``;
    False for a wrong signature and for malformed key or signature text."""
    try:
        key = load_device_public_key(openssh_public_key_text)
        signature = bytes.fromhex(signature_hex)
    except (SigningError, ValueError, TypeError):
        return False
    try:
        key.verify(signature, bytes(statement), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return False
    return True
