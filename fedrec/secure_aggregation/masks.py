"""Pseudo-random masks and arithmetic in Z_m, m = 2^b.

A mask is ``PRG(seed) ∈ Z_m^L``: ChaCha20 (RFC 7539, through ``cryptography``) keyed with
the 32-byte seed, nonce zero, run over zeros; the keystream is read as little-endian
``uint32`` words (``uint64`` when b > 32) and each word is reduced to its low ``b`` bits.
Since m divides 2^32 (2^64), every residue has the same number of preimages, so each
entry is exactly uniform on Z_m and independent of the others as long as ChaCha20 is a
PRF. Every seed is used for one mask only (fresh keys and seeds every round), so the zero
nonce never repeats under a key.

Why not Flower's ``pseudo_rand_gen``. It folds the seed into 32 bits and seeds numpy's
Mersenne Twister with them: a server that tries all 2^32 seeds can regenerate a mask,
which is what :mod:`fedrec.core.privacy.secure_random` forbids for every secret draw in this
project; and ``randint(0, m − 1)`` never draws ``m − 1``, so its masks are not uniform
on Z_m and a masked entry equal to ``x − 1`` (mod m) is impossible. The protocol
otherwise uses Flower's primitives unchanged (key agreement, Fernet, Shamir).

Vectors are ``numpy.uint64``: sums and differences wrap modulo 2^64, and because m divides
2^64 taking ``& (m − 1)`` afterwards gives the exact result in Z_m.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

SEED_BYTES = 32
_ZERO_NONCE = bytes(16)


def prg_mask(seed: bytes, length: int, modulus_bits: int) -> np.ndarray:
    """``PRG(seed)``: ``length`` entries, uniform on Z_{2^modulus_bits}, as ``uint64``."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed is {SEED_BYTES} bytes, got {len(seed)}")
    word = np.dtype("<u4") if modulus_bits <= 32 else np.dtype("<u8")
    keystream = Cipher(algorithms.ChaCha20(seed, _ZERO_NONCE), mode=None).encryptor().update(
        bytes(length * word.itemsize))
    return reduce_mod(np.frombuffer(keystream, dtype=word).astype(np.uint64), modulus_bits)


def reduce_mod(vector: np.ndarray, modulus_bits: int) -> np.ndarray:
    """``vector mod 2^b`` for a ``uint64`` array (its low ``b`` bits), in place."""
    vector &= np.uint64((1 << modulus_bits) - 1)
    return vector


def wire_dtype(modulus_bits: int) -> np.dtype:
    """The narrowest unsigned type that holds Z_m: what a masked vector travels as (``uint32`` up to 32 bits)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if modulus_bits <= np.iinfo(dtype).bits:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def check_vector(vector: object, length: int, modulus_bits: int, what: str) -> np.ndarray:
    """``vector`` as a fresh ``uint64`` array of shape ``(length,)`` with entries in Z_m; else ``ValueError``."""
    array = np.asarray(vector)
    if array.shape != (length,):
        raise ValueError(f"{what} must have shape ({length},), got {array.shape}")
    if array.dtype.kind not in "ui":
        raise ValueError(f"{what} must hold integers, got dtype {array.dtype}")
    if array.dtype.kind == "i" and array.size and int(array.min()) < 0:
        raise ValueError(f"{what} has negative entries; inputs live in Z_m = [0, 2^{modulus_bits})")
    if modulus_bits < 64 and array.size and int(array.max()) >= 1 << modulus_bits:
        raise ValueError(f"{what} has entries ≥ m = 2^{modulus_bits}")
    return array.astype(np.uint64, copy=True)
