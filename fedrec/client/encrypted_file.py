"""Encryption at rest for a device's state file: AES-256-GCM with a key file or a passphrase.

File layout (all of it authenticated; the header is GCM's associated data)::

    b"FEDRECS1" | kdf (1 byte) | salt (16 bytes) | nonce (12 bytes) | ciphertext ‖ tag

* ``kdf = 0``: the 256-bit key is read from a key file (``state.key`` in the state
  directory by default), created with 32 bytes from the OS's CSPRNG and mode 0600 on
  first use. Whoever can read the key file can read the state: keep the state directory
  on the device, or give a passphrase instead.
* ``kdf = 1``: the key is scrypt(passphrase, salt; n = 2^15, r = 8, p = 1), the passphrase
  taken from the environment variable :data:`PASSPHRASE_ENV`; nothing secret is stored.

A fresh 96-bit nonce is drawn for every write, so a key never encrypts twice under one
nonce. Decryption failure (wrong key or passphrase, a changed byte) raises
:class:`StateDecryptionError`; nothing is written then. Writes are atomic (temporary
file, fsync, rename), so a crash mid-write leaves the previous state intact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"FEDRECS1"
KDF_KEY_FILE, KDF_SCRYPT = 0, 1
SALT_BYTES, NONCE_BYTES, KEY_BYTES = 16, 12, 32
HEADER_BYTES = len(MAGIC) + 1 + SALT_BYTES + NONCE_BYTES
PASSPHRASE_ENV = "FEDREC_STATE_PASSPHRASE"
KEY_FILE_NAME = "state.key"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


class StateDecryptionError(Exception):
    """The state file cannot be decrypted with the key given (or was altered)."""


@dataclass(frozen=True)
class KeySource:
    """Where the state key comes from: a key file, or a passphrase (scrypt)."""

    key_file: Path | None = None
    passphrase: bytes | None = None

    @classmethod
    def for_state_dir(cls, state_dir: Path, environ: dict[str, str] | None = None) -> "KeySource":
        """The passphrase from :data:`PASSPHRASE_ENV` when set, else ``state_dir/state.key``."""
        env = os.environ if environ is None else environ
        passphrase = env.get(PASSPHRASE_ENV)
        if passphrase:
            return cls(passphrase=passphrase.encode("utf-8"))
        return cls(key_file=Path(state_dir) / KEY_FILE_NAME)

    def describe(self) -> str:
        if self.passphrase is not None:
            return f"AES-256-GCM, key from the passphrase in ${PASSPHRASE_ENV} (scrypt)"
        return f"AES-256-GCM, key file {self.key_file} (mode 0600)"


def _scrypt_key(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=KEY_BYTES, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(passphrase)


def _read_or_create_key(path: Path, create: bool) -> bytes:
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise StateDecryptionError(f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte key")
        return key
    if not create:
        raise FileNotFoundError(f"state key {path} not found (and ${PASSPHRASE_ENV} is not set)")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = AESGCM.generate_key(bit_length=8 * KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
        handle.flush()
        os.fsync(handle.fileno())
    return key


def prepare_key(source: KeySource) -> str:
    """Create the key file (0600) when the key comes from one and it does not exist yet;
    returns how the state is encrypted (for the operator)."""
    if source.key_file is not None and source.passphrase is None:
        _read_or_create_key(source.key_file, create=True)
    return source.describe()


def encrypt(plaintext: bytes, source: KeySource) -> bytes:
    """The file bytes for ``plaintext`` (see the module docstring for the layout)."""
    salt = os.urandom(SALT_BYTES)
    nonce = os.urandom(NONCE_BYTES)
    if source.passphrase is not None:
        kdf, key = KDF_SCRYPT, _scrypt_key(source.passphrase, salt)
    elif source.key_file is not None:
        kdf, key = KDF_KEY_FILE, _read_or_create_key(source.key_file, create=True)
    else:
        raise ValueError("a key source needs a key file or a passphrase")
    header = MAGIC + bytes([kdf]) + salt + nonce
    return header + AESGCM(key).encrypt(nonce, plaintext, header)


def decrypt(blob: bytes, source: KeySource, name: str = "state file") -> bytes:
    """The plaintext of file bytes ``blob``; raises :class:`StateDecryptionError`."""
    if len(blob) < HEADER_BYTES + 16 or not blob.startswith(MAGIC):
        raise StateDecryptionError(f"{name} is not a fedrec encrypted state file")
    kdf = blob[len(MAGIC)]
    salt = blob[len(MAGIC) + 1: len(MAGIC) + 1 + SALT_BYTES]
    nonce = blob[len(MAGIC) + 1 + SALT_BYTES: HEADER_BYTES]
    if kdf == KDF_SCRYPT:
        if source.passphrase is None:
            raise StateDecryptionError(f"{name} was encrypted with a passphrase: set ${PASSPHRASE_ENV}")
        key = _scrypt_key(source.passphrase, salt)
    elif kdf == KDF_KEY_FILE:
        if source.key_file is None:
            raise StateDecryptionError(f"{name} was encrypted with a key file, not a passphrase: "
                                       f"unset ${PASSPHRASE_ENV}")
        key = _read_or_create_key(source.key_file, create=False)
    else:
        raise StateDecryptionError(f"{name} names an unknown key derivation ({kdf})")
    try:
        return AESGCM(key).decrypt(nonce, blob[HEADER_BYTES:], blob[:HEADER_BYTES])
    except InvalidTag as err:
        raise StateDecryptionError(f"{name} cannot be decrypted: wrong key or passphrase, or the file "
                                   "was altered") from err


def write_encrypted(path: Path, plaintext: bytes, source: KeySource) -> None:
    """Encrypt and replace ``path`` atomically (0600)."""
    blob = encrypt(plaintext, source)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(blob)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_encrypted(path: Path, source: KeySource) -> bytes:
    return decrypt(path.read_bytes(), source, name=str(path))
