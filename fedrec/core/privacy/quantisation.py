"""Client-side encoding and server-side decoding of the distributed discrete Gaussian (DDG).

Kairouz, Liu & Steinke 2021 ("The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation", ICML; KLS21). Secure aggregation sums integers modulo
``m``, so each client turns its real update into an integer vector that already carries
its share of the noise. With the public parameters of :class:`Quantiser` — clip bound
``c``, grid step ``γ > 0``, modulus ``m = 2^bits``, rounding parameter ``β ∈ [0, 1)`` —
client ``i`` with update ``xᵢ ∈ ℝ^d`` sends

1. **clip**: ``xᵢ ← xᵢ · min(1, c / ‖xᵢ‖₂)``, so ``‖xᵢ‖₂ ≤ c``;
2. **scale**: ``xᵢ ← xᵢ / γ`` (now ``‖xᵢ‖₂ ≤ c/γ``, in grid units);
3. **rotate** (optional, on by default): pad with zeros to ``d' = 2^⌈log₂ d⌉`` and apply
   ``U = H·D / √d'``, ``D`` a diagonal of ±1 signs drawn from the round's public seed and
   ``H`` the ``d' × d'`` Walsh–Hadamard matrix. ``U`` is orthogonal, so the norm is kept,
   and it spreads the mass evenly: each coordinate of ``U·s`` is a Rademacher sum with
   variance proxy ``‖s‖²/d'`` — which is what lets a small modulus hold the sum. The
   rotation is not secret (it only needs to be independent of the data);
4. **round, conditionally**: randomized rounding ``x̃ⱼ = ⌊xⱼ⌋ + Bernoulli(xⱼ − ⌊xⱼ⌋)``
   (unbiased, each coordinate moves by less than 1), repeated from scratch until
   ``‖x̃‖₂ ≤ B``, with (KLS21's bound, in grid units)

       B = min{ c/γ + √d',  √( c²/γ² + d'/4 + √(2 ln(1/β)) · (c/γ + √d'/2) ) }.

   The first term holds for every rounding; the second holds with probability ≥ 1 − β
   for one rounding, so the loop ends after at most ``1/(1−β)`` tries on average.
   ``B`` is the **L2 sensitivity** the accountant uses (a user whose data is zeroed out
   sends the rounding of 0, which is 0 exactly);
5. **noise**: add ``yᵢ ~ N_Z(0, σ²)^{d'}``, the client's share (σ in grid units);
6. **wrap**: reduce modulo ``m`` into ``[−m/2, m/2)``.

The server (through secure aggregation) learns only ``z = Σᵢ zᵢ mod m``; centred into
``[−m/2, m/2)`` it equals the integer sum ``Σᵢ (x̃ᵢ + yᵢ)`` exactly unless some coordinate
of that sum left ``[−m/2, m/2)`` (a wrap-around). It then multiplies by ``γ``, undoes the
rotation (``Uᵀ = D·H/√d'``) and drops the padding: :func:`decode_sum` returns the noised
sum of the clipped updates, in update units. Dividing by the expected number of clients
(a mean) is the caller's step.

Randomness. The rounding coins and the noise come from :class:`SecureRandom` (the
client's secret generator); the rotation's signs come from a ChaCha20 stream keyed by a
hash of the round's **public** seed (every client and the server derive the same ``D``).

Wrap-around. :func:`wrap_around_probability` bounds the chance that any coordinate of the
integer sum leaves ``[−m/2, m/2)``, and :func:`choose_gamma` picks the smallest ``γ``
(the finest grid, the least rounding error) that keeps the bound below a target; the
derivation is in ``docs/distributed_dp.md`` and in :func:`wrap_around_probability`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

from fedrec.core.privacy.discrete_gaussian import sample_discrete_gaussian
from fedrec.core.privacy.secure_random import SecureRandom

__all__ = [
    "DEFAULT_BETA", "MAX_BITS", "MIN_BITS", "MAX_SCALED_CLIP", "GammaChoice", "Quantiser",
    "choose_gamma", "clip_to_norm", "conditional_round", "conditional_round_rows", "decode_sum", "encode",
    "encode_batch", "modular_sum",
    "padded_dim", "quantise", "quantise_batch", "randomized_round", "reduce_modulo", "rotate", "rounding_norm_bound",
    "rotation_signs", "unrotate", "walsh_hadamard", "wrap_around_probability",
]

# The modulus is 2^bits with MIN_BITS ≤ bits ≤ MAX_BITS: below 4 bits nothing but noise
# fits; above 48 bits γ·(an integer of the sum) no longer leaves float64 (53-bit
# mantissa) room to be exact, and SecAgg's masks would cost more than the update.
MIN_BITS, MAX_BITS = 4, 48
# β = e^{-1/2} makes √(2 ln(1/β)) = 1 and needs ≤ 1/(1 − β) ≈ 2.5 roundings on average.
DEFAULT_BETA = math.exp(-0.5)
# c/γ at most 2^30: every rounded vector then has ‖x̃‖₂² < 2^62 (exact in int64).
MAX_SCALED_CLIP = float(2 ** 30)
_WHT_CHUNK = 1 << 17  # entries per chunk of rows in walsh_hadamard (1 MiB of float64)
_MAX_ROUNDING_TRIES = 10_000  # with β ≤ 0.99 the chance of reaching this is ≤ 0.99^10000 ≈ 2e-44


@dataclass(frozen=True)
class Quantiser:
    """The public parameters of the DDG encoding of one update of length ``dim``.

    ``clip`` (c, update units), ``gamma`` (γ, the grid step in update units), ``bits``
    (the modulus is ``2^bits``), ``beta`` (the conditional rounding's β, 0 for plain
    rounding with the deterministic bound), ``rotate`` (randomized Walsh–Hadamard).
    """

    clip: float
    gamma: float
    bits: int
    dim: int
    beta: float = DEFAULT_BETA
    rotate: bool = True

    def __post_init__(self) -> None:
        _check_positive("clip", self.clip)
        _check_positive("gamma", self.gamma)
        _check_bits(self.bits)
        _check_dim(self.dim)
        _check_beta(self.beta)
        if self.clip / self.gamma > MAX_SCALED_CLIP:
            raise ValueError(f"γ = {self.gamma} is too small for clip {self.clip}: c/γ = "
                             f"{self.clip / self.gamma:.3g} exceeds 2^30 grid units")

    @property
    def modulus(self) -> int:
        return 1 << self.bits

    @property
    def encoded_dim(self) -> int:
        """The length of the integer vector: ``d`` padded to a power of two when rotating."""
        return padded_dim(self.dim) if self.rotate else self.dim

    @property
    def scaled_clip(self) -> float:
        """``c/γ``: the clip bound in grid units."""
        return self.clip / self.gamma

    @property
    def norm_bound(self) -> float:
        """``B``: the L2 bound every conditionally rounded vector meets (grid units)."""
        return rounding_norm_bound(self.scaled_clip, self.encoded_dim, self.beta)


# --- the steps ----------------------------------------------------------------------------

def clip_to_norm(update: np.ndarray, clip: float) -> np.ndarray:
    """``x · min(1, c/‖x‖₂)`` in float64 (a zero vector stays zero)."""
    _check_positive("clip", clip)
    x = np.asarray(update, dtype=np.float64)
    norm = float(np.linalg.norm(x))
    return x * (clip / norm) if norm > clip else x.copy()


def padded_dim(dim: int) -> int:
    """The smallest power of two ``≥ dim``."""
    _check_dim(dim)
    return 1 << (dim - 1).bit_length()


def walsh_hadamard(x: np.ndarray) -> np.ndarray:
    """``H x / √n`` along the last axis (length ``n`` a power of two): the orthonormal
    Walsh–Hadamard transform, its own inverse. ``O(n log n)``, float64.

    ``H_n = H_high ⊗ H_low`` with ``n = high · low``: seen as a ``high × low`` matrix, the
    vector is transformed along its rows' index (butterflies over contiguous runs of
    ``low``), transposed, and transformed along the other index the same way — every
    butterfly then works on long contiguous runs, ≈ 2.3× faster than the plain radix-2
    passes whose first stages touch runs of 1, 2, 4 … entries. Every operation is
    elementwise within one row, so a row's result does not depend on the other rows of a
    batch (batched and one-at-a-time encodings agree bit for bit); rows go through in
    chunks of about 1 MiB, which keeps the passes in cache.
    """
    y = np.array(x, dtype=np.float64)
    n = y.shape[-1]
    if n < 1 or n & (n - 1):
        raise ValueError(f"the Walsh–Hadamard transform needs a power-of-two length, got {n}")
    lead = y.shape[:-1]
    rows = y.reshape(-1, n)
    low = 1 << ((n.bit_length() - 1) // 2)
    high = n // low
    chunk = max(1, _WHT_CHUNK // n)
    for start in range(0, rows.shape[0], chunk):
        block = rows[start:start + chunk].reshape(-1, high, low)
        _butterflies(block)
        turned = np.ascontiguousarray(block.transpose(0, 2, 1))
        _butterflies(turned)
        block[...] = turned.transpose(0, 2, 1)
    rows *= 1.0 / math.sqrt(n)
    return rows.reshape(*lead, n)


def _butterflies(y: np.ndarray) -> None:
    """The unnormalised Walsh–Hadamard transform of ``y`` (shape ``(m, L, r)``, C-contiguous)
    along its middle axis, in place: ``log₂ L`` passes of ``(a, b) → (a + b, a − b)``."""
    m, length, inner = y.shape
    h = 1
    while h < length:
        pairs = y.reshape(m, length // (2 * h), 2, h * inner)
        first, second = pairs[:, :, 0, :], pairs[:, :, 1, :]
        difference = first - second
        first += second
        second[...] = difference
        h *= 2


def rotation_signs(seed: int, length: int) -> np.ndarray:
    """The ±1 diagonal ``D`` of the rotation, from the round's public ``seed`` (float64).

    Drawn from ChaCha20 keyed with SHA-256 of the seed: anyone holding the seed gets the
    same signs, which is the point (the rotation is public); they are independent of
    every update as long as the seed is fixed after the updates' inputs are. Read-only
    (cached per seed and length).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2 ** 64:
        raise ValueError(f"the rotation seed is an integer in [0, 2^64), got {seed!r}")
    return _rotation_signs(int(seed), int(length))


@lru_cache(maxsize=8)
def _rotation_signs(seed: int, length: int) -> np.ndarray:
    """Cached: a round's clients share one seed (public), so one draw serves the batch."""
    key = hashlib.sha256(b"fedrec ddg rotation signs" + seed.to_bytes(8, "little")).digest()
    bits = np.frombuffer(SecureRandom(key).bytes(length), dtype=np.uint8) & 1
    signs = 1.0 - 2.0 * bits.astype(np.float64)
    signs.flags.writeable = False
    return signs


def rotate(x: np.ndarray, seed: int) -> np.ndarray:
    """``U x = H D x / √d'`` after zero-padding ``x`` to ``d' = padded_dim(len(x))``
    (along the last axis: a 2-D ``x`` is a batch of rows, each rotated alike)."""
    x = np.asarray(x, dtype=np.float64)
    n = padded_dim(x.shape[-1])
    padded = np.zeros((*x.shape[:-1], n), dtype=np.float64)
    padded[..., : x.shape[-1]] = x
    padded *= rotation_signs(seed, n)
    return walsh_hadamard(padded)


def unrotate(y: np.ndarray, seed: int, dim: int) -> np.ndarray:
    """``Uᵀ y = D H y / √d'``, truncated to the first ``dim`` coordinates."""
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[-1]
    if n != padded_dim(dim):
        raise ValueError(f"a rotated vector of length {dim} has length {padded_dim(dim)}, got {n}")
    return (walsh_hadamard(y) * rotation_signs(seed, n))[:dim]


def randomized_round(x: np.ndarray, rng: SecureRandom) -> np.ndarray:
    """Unbiased randomized rounding: ``⌊x⌋ + 1`` with probability ``x − ⌊x⌋``, else ``⌊x⌋``
    (``int64``). Integers are kept exactly; ``E[x̃] = x``; ``|x̃ − x| < 1``."""
    x = np.asarray(x, dtype=np.float64)
    floor = np.floor(x)
    up = np.asarray(rng.random(x.shape)) < (x - floor)
    return floor.astype(np.int64) + up


def rounding_norm_bound(scaled_clip: float, dim: int, beta: float) -> float:
    """KLS21's ``B = min{ c/γ + √d, √(c²/γ² + d/4 + √(2 ln(1/β))·(c/γ + √d/2)) }``.

    ``scaled_clip`` is ``c/γ``, ``dim`` the length of the rounded vector. The first term
    bounds every rounding (``|x̃ⱼ − xⱼ| < 1``); the second bounds one unbiased rounding of
    a vector of norm ≤ c/γ with probability ≥ 1 − β (``E‖x̃‖² ≤ ‖x‖² + d/4`` plus a
    concentration term). ``β = 0`` leaves the first term only.
    """
    if not scaled_clip >= 0:
        raise ValueError(f"c/γ must be ≥ 0, got {scaled_clip}")
    _check_dim(dim)
    _check_beta(beta)
    deterministic = scaled_clip + math.sqrt(dim)
    if beta == 0:
        return deterministic
    spread = math.sqrt(2.0 * math.log(1.0 / beta))
    probable = math.sqrt(scaled_clip ** 2 + dim / 4.0 + spread * (scaled_clip + math.sqrt(dim) / 2.0))
    return min(deterministic, probable)


def conditional_round(x: np.ndarray, bound: float, rng: SecureRandom) -> np.ndarray:
    """Randomized rounding of ``x``, redrawn until ``‖x̃‖₂ ≤ bound`` (the check is exact:
    integer sum of squares against ``bound²``)."""
    bound_squared = float(bound) ** 2
    for _ in range(_MAX_ROUNDING_TRIES):
        rounded = randomized_round(x, rng)
        if int(np.dot(rounded, rounded)) <= bound_squared:
            return rounded
    raise RuntimeError(f"no rounding of a vector of norm {np.linalg.norm(x):.6g} met the bound {bound:.6g} "
                       f"in {_MAX_ROUNDING_TRIES} tries: the input exceeds the clip the bound was made for")


def conditional_round_rows(x: np.ndarray, bound: float, rngs: Sequence[SecureRandom]) -> np.ndarray:
    """:func:`conditional_round` of each row of ``x`` (shape ``(k, n)``) with its own
    generator ``rngs[i]``: row ``i`` is redrawn from ``rngs[i]`` until ``‖x̃ᵢ‖₂ ≤ bound``,
    independently of the other rows; the same draws, in the same order, as
    :func:`conditional_round` of that row alone."""
    bound_squared = float(bound) ** 2
    floor = np.floor(x)
    fraction = x - floor
    out = floor.astype(np.int64)
    for i, rng in enumerate(rngs):
        for _ in range(_MAX_ROUNDING_TRIES):
            rounded = out[i] + (np.asarray(rng.random(fraction[i].shape)) < fraction[i])
            if int(np.dot(rounded, rounded)) <= bound_squared:
                out[i] = rounded
                break
        else:
            raise RuntimeError(f"no rounding of a vector of norm {np.linalg.norm(x[i]):.6g} met the bound "
                               f"{bound:.6g} in {_MAX_ROUNDING_TRIES} tries: the input exceeds the clip the bound "
                               "was made for")
    return out


def quantise(update: np.ndarray, quantiser: Quantiser, noise_std: float, rng: SecureRandom,
             rotation_seed: int = 0) -> np.ndarray:
    """Steps 1–5: ``x̃ + y`` as an ``int64`` vector of length ``quantiser.encoded_dim``,
    not yet reduced modulo ``m`` (see :func:`encode`).

    ``update``: a 1-D float array of length ``quantiser.dim``, all finite. ``noise_std``:
    the client's noise share ``σ`` in grid units (``N_Z(0, σ²)`` per coordinate; 0 adds
    none — only for measuring the rounding alone). ``rotation_seed``: the round's public
    seed (ignored when ``quantiser.rotate`` is off). One client's case of
    :func:`quantise_batch` (the same code, so the same output for the same stream).
    """
    x = _check_update(update, quantiser.dim)
    return quantise_batch(x[None, :], quantiser, noise_std, [rng], rotation_seed)[0]


def quantise_batch(updates: np.ndarray, quantiser: Quantiser, noise_std: float,
                   rngs: Sequence[SecureRandom], rotation_seed: int = 0) -> np.ndarray:
    """Steps 1–5 for ``k`` clients at once: row ``i`` of ``updates`` (shape ``(k, dim)``)
    is client ``i``'s update and ``rngs[i]`` its own generator; returns ``(k, d')`` int64.

    Row ``i`` is exactly what :func:`quantise` makes of update ``i`` with ``rngs[i]``: the
    clip, scaling and rotation are elementwise within a row (the rotation's signs are the
    round's public ones, drawn once), each row is rounded from its own generator and
    redrawn on its own until *its* norm meets ``B`` (a row that meets it is never redrawn,
    so rows do not influence each other's rounding), and then its noise share
    ``N_Z(0, σ²)^{d'}`` comes from the same generator, after its rounding coins — the
    order :func:`quantise` draws in. Batching only saves per-call work; the distribution
    of every row and the independence between rows are those of one-at-a-time encoding
    (with independent generators; one generator passed ``k`` times also gives independent
    draws, each row's from a fresh part of the stream).
    """
    x = _check_updates(updates, quantiser.dim)
    rngs = list(rngs)
    if len(rngs) != x.shape[0]:
        raise ValueError(f"one generator per row: {x.shape[0]} updates, {len(rngs)} generators")
    for rng in rngs:
        if not isinstance(rng, SecureRandom):
            raise TypeError(f"rng must be a SecureRandom, got {type(rng).__name__}")
    if isinstance(noise_std, bool) or not (isinstance(noise_std, (int, float, np.floating)) and noise_std >= 0
                                           and math.isfinite(noise_std)):
        raise ValueError(f"noise_std must be a finite number ≥ 0 (grid units), got {noise_std!r}")
    for row in x:  # clip each row alone; the norm without BLAS (whose threads stall on a busy machine)
        norm = math.sqrt(float(np.square(row).sum()))
        if norm > quantiser.clip:
            row *= quantiser.clip / norm
    x /= quantiser.gamma
    scaled = rotate(x, rotation_seed) if quantiser.rotate else x
    rounded = conditional_round_rows(scaled, quantiser.norm_bound, rngs)
    if noise_std > 0:
        for row, rng in zip(rounded, rngs):
            row += sample_discrete_gaussian(noise_std, row.size, rng)
    return rounded


def reduce_modulo(values: np.ndarray, bits: int) -> np.ndarray:
    """``v mod 2^bits`` represented in ``[−m/2, m/2)`` (``int64``)."""
    _check_bits(bits)
    v = np.asarray(values)
    if not np.issubdtype(v.dtype, np.integer):
        raise ValueError(f"only integer vectors can be reduced modulo 2^bits, got dtype {v.dtype}")
    half = np.int64(1 << (bits - 1))
    return np.mod(v.astype(np.int64) + half, np.int64(1 << bits)) - half


def encode(update: np.ndarray, quantiser: Quantiser, noise_std: float, rng: SecureRandom,
           rotation_seed: int = 0) -> np.ndarray:
    """Steps 1–6: what a client hands to secure aggregation (``int64`` in ``[−m/2, m/2)``)."""
    return reduce_modulo(quantise(update, quantiser, noise_std, rng, rotation_seed), quantiser.bits)


def encode_batch(updates: np.ndarray, quantiser: Quantiser, noise_std: float, rngs: Sequence[SecureRandom],
                 rotation_seed: int = 0) -> np.ndarray:
    """:func:`encode` of each row of ``updates`` with its own generator (see
    :func:`quantise_batch`): ``(k, d')`` int64 in ``[−m/2, m/2)``."""
    return reduce_modulo(quantise_batch(updates, quantiser, noise_std, rngs, rotation_seed), quantiser.bits)


def modular_sum(encoded: Iterable[np.ndarray], bits: int) -> np.ndarray:
    """``Σᵢ zᵢ mod 2^bits`` in ``[−m/2, m/2)``: what the server learns from secure
    aggregation (computed in the clear here, for the emulation and the tests)."""
    _check_bits(bits)
    total: np.ndarray | None = None
    half = 1 << (bits - 1)
    for vector in encoded:
        v = np.asarray(vector)
        if not np.issubdtype(v.dtype, np.integer) or v.ndim != 1:
            raise ValueError(f"encoded vectors are 1-D integer arrays, got dtype {v.dtype}, shape {v.shape}")
        if v.size and (int(v.min()) < -half or int(v.max()) >= half):
            raise ValueError(f"an encoded vector has entries outside [−2^{bits - 1}, 2^{bits - 1})")
        if total is not None and v.shape != total.shape:
            raise ValueError(f"encoded vectors of different lengths: {total.shape} and {v.shape}")
        total = v.astype(np.int64) if total is None else reduce_modulo(total + v, bits)
    if total is None:
        raise ValueError("the modular sum of no vectors is undefined (no length)")
    return total


def decode_sum(summed: np.ndarray, quantiser: Quantiser, rotation_seed: int = 0) -> np.ndarray:
    """The server's step: ``γ · Uᵀ z`` truncated to ``dim`` (float64, update units), with
    ``z`` the centred modular sum. Equals ``Σᵢ clip(xᵢ)`` plus ``γ·Uᵀ(Σ rounding errors +
    Σ noise)`` when nothing wrapped around; the caller divides by the expected count."""
    z = np.asarray(summed)
    if not np.issubdtype(z.dtype, np.integer) or z.shape != (quantiser.encoded_dim,):
        raise ValueError(f"a modular sum is an integer vector of length {quantiser.encoded_dim}, "
                         f"got dtype {z.dtype}, shape {z.shape}")
    centred = reduce_modulo(z, quantiser.bits).astype(np.float64)
    real = quantiser.gamma * centred
    return unrotate(real, rotation_seed, quantiser.dim) if quantiser.rotate else real


# --- the modulus: wrap-around ---------------------------------------------------------------

@dataclass(frozen=True)
class GammaChoice:
    """The grid step chosen by :func:`choose_gamma` and the bound it guarantees."""

    gamma: float
    wrap_probability: float  # an upper bound on P[any coordinate of the round's sum wraps]


def wrap_around_probability(quantiser: Quantiser, n_clients: int, noise_std: float) -> float:
    """An upper bound on the probability that any coordinate of ``Σᵢ (x̃ᵢ + yᵢ)`` (``n``
    clients, noise ``σ`` in grid units each) leaves ``[−m/2, m/2)``.

    Write a coordinate of the integer sum as ``S = A + E + N``: ``A`` the coordinate of
    ``U Σᵢ xᵢ/γ``, ``E`` the sum of the ``n`` rounding errors, ``N`` the sum of the
    ``n`` noise shares. Then

    * ``|E| < n`` always (each error is in (−1, 1), whatever the conditioning did);
    * ``N`` is ``nσ²``-subgaussian (each N_Z(0, σ²) is σ²-subgaussian, CKS20);
    * with rotation, ``A = Σₖ ±(H_jk/√d') sₖ`` with independent signs and
      ``‖s‖₂ ≤ n·c/γ``, so ``A`` is ``(nc/γ)²/d'``-subgaussian (Hoeffding), independent
      of ``N``; without rotation only ``|A| ≤ n·c/γ`` is known.

    Hence, with ``h = m/2 − n`` (rotation) or ``h = m/2 − n − nc/γ`` (none) and
    ``V = (nc/γ)²/d' + nσ²`` (rotation) or ``V = nσ²`` (none),
    ``P[wrap at one coordinate] ≤ 2·exp(−h²/(2V))``, and a union bound over the ``d'``
    coordinates gives the result (capped at 1; 1 when ``h ≤ 0``). ``‖s‖ ≤ nc`` is the
    worst case (all updates aligned); typical updates wrap far less often.
    """
    n = _check_clients(n_clients)
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be ≥ 0, got {noise_std}")
    half = quantiser.modulus / 2
    data = n * quantiser.scaled_clip
    if quantiser.rotate:
        headroom = half - n
        variance = data ** 2 / quantiser.encoded_dim + n * noise_std ** 2
    else:
        headroom = half - n - data
        variance = n * noise_std ** 2
    if headroom <= 0:
        return 1.0
    if variance == 0:
        return 0.0
    log_bound = math.log(2 * quantiser.encoded_dim) - headroom ** 2 / (2 * variance)
    return min(1.0, math.exp(log_bound))


def choose_gamma(clip: float, dim: int, n_clients: int, noise_share_std: float, bits: int,
                 target_wrap_probability: float = 1e-9, rotate: bool = True) -> GammaChoice:
    """The smallest grid step ``γ`` with :func:`wrap_around_probability` ≤ the target.

    ``noise_share_std`` is each client's noise std **in update units** (``σ_grid · γ``):
    with it fixed, every term of the bound scales like ``1/γ`` in grid units, so the
    condition ``2d'·exp(−h²/(2V)) ≤ p`` solves in closed form. With ``L = ln(2d'/p)``:

    * rotation: ``γ = √(2L·((nc)²/d' + n·σ²)) / (m/2 − n)``;
    * none: ``γ = (n·c + √(2L·n)·σ) / (m/2 − n)``.

    The smallest ``γ`` is the finest grid: the least rounding noise and the smallest
    sensitivity inflation (``d'/4`` against ``(c/γ)²``). Raises ValueError when ``m/2 ≤ n``
    (``bits`` too small for ``n`` clients: the rounding errors alone could wrap).
    """
    _check_positive("clip", clip)
    _check_dim(dim)
    n = _check_clients(n_clients)
    _check_bits(bits)
    if not (noise_share_std >= 0 and math.isfinite(noise_share_std)):
        raise ValueError(f"noise_share_std must be a finite number ≥ 0, got {noise_share_std}")
    if not 0 < target_wrap_probability < 1:
        raise ValueError(f"the target wrap-around probability must be in (0, 1), got {target_wrap_probability}")
    half = (1 << bits) / 2
    if half <= n:
        raise ValueError(f"a modulus of 2^{bits} is too small for {n} clients: the sum of their rounding "
                         f"errors alone can reach {n} ≥ m/2 = {half:g}")
    length = padded_dim(dim) if rotate else dim
    log_term = math.log(2 * length / target_wrap_probability)
    if rotate:
        gamma = math.sqrt(2 * log_term * ((n * clip) ** 2 / length + n * noise_share_std ** 2)) / (half - n)
    else:
        gamma = (n * clip + math.sqrt(2 * log_term * n) * noise_share_std) / (half - n)
    gamma *= 1 + 1e-12  # float rounding must not put the bound a hair above the target
    quantiser = Quantiser(clip=clip, gamma=gamma, bits=bits, dim=dim, beta=0.0, rotate=rotate)
    return GammaChoice(gamma, wrap_around_probability(quantiser, n, noise_share_std / gamma))


# --- input checks ---------------------------------------------------------------------------

def _check_update(update: np.ndarray, dim: int) -> np.ndarray:
    if not isinstance(update, np.ndarray):
        raise ValueError(f"an update is a numpy array, got {type(update).__name__}")
    if not np.issubdtype(update.dtype, np.floating):
        raise ValueError(f"an update is a float array, got dtype {update.dtype}")
    if update.shape != (dim,):
        raise ValueError(f"an update has shape ({dim},), got {update.shape}")
    if not np.all(np.isfinite(update)):
        raise ValueError("an update with NaN or infinite entries cannot be encoded")
    return update.astype(np.float64)


def _check_updates(updates: np.ndarray, dim: int) -> np.ndarray:
    if not isinstance(updates, np.ndarray):
        raise ValueError(f"updates are a numpy array, got {type(updates).__name__}")
    if not np.issubdtype(updates.dtype, np.floating):
        raise ValueError(f"updates are a float array, got dtype {updates.dtype}")
    if updates.ndim != 2 or updates.shape[1] != dim:
        raise ValueError(f"a batch of updates has shape (k, {dim}), got {updates.shape}")
    if not np.all(np.isfinite(updates)):
        raise ValueError("an update with NaN or infinite entries cannot be encoded")
    return np.array(updates, dtype=np.float64)  # a copy: clipped and scaled in place


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and > 0, got {value}")


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}] (modulus 2^bits), got {bits!r}")


def _check_dim(dim: int) -> None:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")


def _check_beta(beta: float) -> None:
    if not (isinstance(beta, (int, float, np.floating)) and 0 <= beta < 1):
        raise ValueError(f"β must be in [0, 1), got {beta!r}")


def _check_clients(n_clients: int) -> int:
    if isinstance(n_clients, bool) or not isinstance(n_clients, (int, np.integer)) or n_clients < 1:
        raise ValueError(f"the number of clients must be a positive integer, got {n_clients!r}")
    return int(n_clients)
