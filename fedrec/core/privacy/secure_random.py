"""The one source of every secret random draw: ChaCha20 keyed with 256 bits from the OS.

Which draws are secret. Everything a DP guarantee rests on: the Gaussian noise of every
mode (record-level DP-SGD, user-local, user-central, evaluation releases, federated
item-kNN, adaptive clipping's count), and every sample whose secrecy the accountant's
amplification counts on (Poisson samples of records and of users). A draw an adversary
can replay is no noise at all: with ``torch.Generator().manual_seed(s)`` (which keeps
only the low 32 bits of ``s``) a server can try all 2³² seeds, regenerate the noise and
subtract it. So none of these draws ever comes from torch's or numpy's generators
(Mersenne Twister, Philox, PCG64: fast, but not cryptographic — their state can be
recovered from their outputs), and no secret ever seeds one.

Generator. :class:`SecureRandom` runs ChaCha20 (RFC 7539, through ``cryptography``) as
a keystream generator: key ``K`` (32 bytes, ``os.urandom`` unless a test passes one),
nonce = a 64-bit block counter start ‖ a 64-bit stream id, plaintext zeros. The
keystream is read as little-endian ``uint64`` words. Knowing any amount of output does
not reveal ``K`` or later output (ChaCha20 is a PRF), so the draws of one release say
nothing about another's. Two generators built without a key share nothing.

From words to numbers:

* uniform on ``(0, 1)``: ``u = (⌊w / 2¹¹⌋ + ½) / 2⁵³`` — 53 random bits, never 0 or 1;
* integers in ``[0, n)``: rejection sampling on 64-bit words (no modulo bias);
* Bernoulli(``p``): ``u < p``;
* standard normal: Box–Muller, ``z₁ = √(−2 ln u₁) cos 2πu₂``, ``z₂ = √(−2 ln u₁) sin 2πu₂``,
  both used, in float64.

Floating-point attacks (Mironov 2012, "On significance of the least significant bits
for differential privacy"). Mironov showed that a textbook Laplace sampler,
``−b·ln(u)`` with a double ``u``, reaches only an irregular, sparse subset of the
doubles, so an output ``x + η`` can reveal ``x`` exactly; later work showed the same for
common Gaussian samplers (Box–Muller, polar; Jin et al. 2022, "Are we there yet?
Timing and floating-point attacks on differential privacy systems"). The attack needs
the released value at the precision the noise was generated in. Here it is not: the
noise is drawn in float64 (53-bit uniforms, so the draws are spaced ≈ 2⁻⁵³ relative),
added in float64, and the sum is **rounded to float32** before it leaves (every update
and model is float32), i.e. snapped to a grid 2²⁹ times coarser than the draws'
resolution — the remedy Mironov proposed (snapping: round the noised value to a grid
coarser than the sampler's resolution), here without his clamping step. We do not
claim a proof: the residual risk is that a float32 grid cell's probability under the
float64 sampler deviates from the ideal Gaussian's, which is bounded by the sampler's
2⁻⁵³ granularity and tail truncation at ``√(−2 ln 2⁻⁵⁴) ≈ 8.6`` standard deviations
(probability of a larger |z| under the ideal Gaussian: ≈ 10⁻¹⁷, far below any δ we
allow). A provable alternative (a discrete Gaussian on an integer grid, Canonne, Kamath,
Steinke 2020) is what the secure-aggregation work will need and can plug in here.
"""

from __future__ import annotations

import math
import os
import struct
from typing import Sequence

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

KEY_BYTES = 32  # 256-bit ChaCha20 key
_TWO_53 = float(2 ** 53)


class SecureRandom:
    """A cryptographically secure generator with numpy-like ``random``, ``integers``,
    ``normal`` (and ``bernoulli``, ``torch_normal``).

    ``key``: 32 bytes; ``None`` draws a fresh key from ``os.urandom`` (production). A
    fixed key makes the stream reproducible — for tests only, never from a config value.
    """

    def __init__(self, key: bytes | None = None, stream: int = 0) -> None:
        if key is None:
            key = os.urandom(KEY_BYTES)
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            raise ValueError(f"a SecureRandom key is {KEY_BYTES} bytes, got {type(key).__name__} "
                             f"of length {len(key) if isinstance(key, (bytes, bytearray)) else '?'}")
        if not 0 <= stream < 2 ** 64:
            raise ValueError(f"stream must be in [0, 2^64), got {stream}")
        # cryptography's ChaCha20 nonce is 16 bytes: a 64-bit block counter, then a 64-bit nonce
        nonce = struct.pack("<QQ", 0, stream)
        self._encryptor = Cipher(algorithms.ChaCha20(bytes(key), nonce), mode=None).encryptor()
        self._spare: np.ndarray | None = None  # the unused half of the last Box–Muller pair

    # --- raw words ----------------------------------------------------------------------
    def bytes(self, n: int) -> bytes:
        """``n`` bytes of keystream."""
        return bytes(self._keystream(n))

    def _keystream(self, n: int) -> bytearray:
        """``n`` bytes of keystream in a fresh buffer (the zero plaintext is shared, not allocated)."""
        if n < 0:
            raise ValueError(f"cannot draw {n} bytes")
        buffer = bytearray(n)
        self._encryptor.update_into(_zero_plaintext(n), buffer)
        return buffer

    def _words(self, n: int) -> np.ndarray:
        return np.frombuffer(self._keystream(8 * n), dtype="<u8").astype(np.uint64, copy=False)

    # --- numpy-like draws -------------------------------------------------------------
    def random(self, size: int | Sequence[int] | None = None) -> float | np.ndarray:
        """Uniform on the open interval ``(0, 1)``, 53 random bits each."""
        count, shape = _count(size)
        values = ((self._words(count) >> np.uint64(11)).astype(np.float64) + 0.5) / _TWO_53
        return float(values[0]) if shape is None else values.reshape(shape)

    def integers(self, low: int, high: int | None = None,
                 size: int | Sequence[int] | None = None) -> int | np.ndarray:
        """Uniform integers in ``[low, high)`` (``[0, low)`` when ``high`` is None), unbiased."""
        if high is None:
            low, high = 0, low
        span = int(high) - int(low)
        if span < 1:
            raise ValueError(f"empty range [{low}, {high})")
        count, shape = _count(size)
        limit = (2 ** 64 // span) * span  # accept words below the largest multiple of span
        out = np.empty(0, dtype=np.uint64)
        while len(out) < count:
            words = self._words(max(count - len(out), 16))
            out = np.concatenate([out, words[words < np.uint64(limit)] if limit < 2 ** 64 else words])
        values = (out[:count] % np.uint64(span)).astype(np.int64) + int(low)
        return int(values[0]) if shape is None else values.reshape(shape)

    def bernoulli(self, p: float, size: int | Sequence[int]) -> np.ndarray:
        """Booleans, each ``True`` with probability ``p`` (a Poisson sample's mask)."""
        if not 0 <= p <= 1:
            raise ValueError(f"probability must be in [0, 1], got {p}")
        return np.asarray(self.random(size)) < p

    def standard_normal(self, size: int | Sequence[int] | None = None) -> float | np.ndarray:
        """Standard normal draws in float64 (Box–Muller, both halves of each pair used)."""
        count, shape = _count(size)
        parts = []
        have = 0
        if self._spare is not None and count > 0:
            parts.append(self._spare[:count])
            have = len(parts[0])
            self._spare = self._spare[count:] if len(self._spare) > count else None
        if have < count:
            pairs = (count - have + 1) // 2
            fresh = _box_muller(torch.from_numpy(np.asarray(self.random(2 * pairs), dtype=np.float64)), 1.0).numpy()
            parts.append(fresh[:count - have])
            if len(fresh) > count - have:
                self._spare = fresh[count - have:]
        values = np.concatenate(parts) if parts else np.empty(0)
        return float(values[0]) if shape is None else values.reshape(shape)

    def normal(self, loc: float = 0.0, scale: float = 1.0,
               size: int | Sequence[int] | None = None) -> float | np.ndarray:
        """``loc + scale · z``, ``z`` standard normal (float64)."""
        if not scale >= 0:
            raise ValueError(f"scale must be ≥ 0, got {scale}")
        z = self.standard_normal(size)
        return loc + scale * z

    def normal_tensor(self, n: int, std: float) -> torch.Tensor:
        """``n`` draws of ``N(0, std²)`` as a float64 tensor, the fast path of a DP step.

        The same words-to-uniform map and Box–Muller formula as :meth:`standard_normal`, on
        fresh keystream (the spare half-pair of ``standard_normal`` is not used or kept):
        the uniforms and the transform in place in torch, no numpy round trip (≈ 0.35 ms for
        55k draws at one thread, against 0.5 ms).
        """
        if n < 0:
            raise ValueError(f"cannot draw {n} normals")
        if not std >= 0:
            raise ValueError(f"std must be ≥ 0, got {std}")
        pairs = (n + 1) // 2
        words = torch.from_numpy(self._words(2 * pairs).view(np.int64))
        # the top 53 bits of each word, as random() takes them (a logical shift: mask the sign bits)
        uniform = ((words >> 11) & ((1 << 53) - 1)).to(torch.float64).add_(0.5).mul_(1.0 / _TWO_53)
        return _box_muller(uniform, std)[:n]

    def torch_normal(self, shape: Sequence[int], std: float, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``N(0, std²)`` as a tensor on ``device``: drawn here on the CPU, then moved."""
        values = np.asarray(self.normal(0.0, std, size=tuple(shape)), dtype=np.float64)
        return torch.from_numpy(values).to(device=device, dtype=dtype)

    def choice(self, a: int | np.ndarray | Sequence[int], size: int, replace: bool = True) -> np.ndarray:
        """``size`` elements of ``a`` (or of ``range(a)``); without replacement, a uniform subset
        in random order."""
        pool = np.arange(a) if isinstance(a, (int, np.integer)) else np.asarray(a)
        if not replace:
            if size > len(pool):
                raise ValueError(f"cannot choose {size} of {len(pool)} without replacement")
            return pool[self.permutation(len(pool))[:size]]
        return pool[np.asarray(self.integers(0, len(pool), size=size))]

    def permutation(self, n: int) -> np.ndarray:
        """A uniform random permutation of ``range(n)``: the order of ``n`` independent 64-bit
        keys (a tie has probability below ``n²/2⁶⁵``; ties keep index order)."""
        return np.argsort(self._words(n), kind="stable")


def _box_muller(uniform: torch.Tensor, std: float) -> torch.Tensor:
    """``std · (√(−2 ln u₁) cos 2πu₂ ‖ √(−2 ln u₁) sin 2πu₂)`` in float64, ``u₁``/``u₂`` the two
    halves of ``uniform`` (overwritten). In torch: numpy's functions to within an ulp, ~5×
    faster at one thread (vectorised log/sin/cos)."""
    pairs = len(uniform) // 2
    radius = uniform[:pairs].log_().mul_(-2.0).sqrt_().mul_(std)
    angle = uniform[pairs:].mul_(2.0 * math.pi)
    out = torch.empty(2 * pairs, dtype=torch.float64)
    torch.mul(radius, torch.cos(angle), out=out[:pairs])
    torch.mul(radius, angle.sin_(), out=out[pairs:])
    return out


_ZERO_PLAINTEXT = bytes(1 << 16)  # grown on demand; shared by every generator (zeros are no secret)


def _zero_plaintext(n: int) -> memoryview:
    """``n`` zero bytes to encrypt into keystream, without allocating them per draw."""
    global _ZERO_PLAINTEXT
    if len(_ZERO_PLAINTEXT) < n:
        _ZERO_PLAINTEXT = bytes(max(n, 2 * len(_ZERO_PLAINTEXT)))
    return memoryview(_ZERO_PLAINTEXT)[:n]


def secure_generator() -> SecureRandom:
    """A fresh :class:`SecureRandom` keyed from the OS (not reproducible, on purpose)."""
    return SecureRandom()


def _count(size: int | Sequence[int] | None) -> tuple[int, tuple[int, ...] | None]:
    if size is None:
        return 1, None
    shape = (int(size),) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimension in size {size}")
    return int(np.prod(shape, dtype=np.int64)) if shape else 1, shape
