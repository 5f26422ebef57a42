"""The seed-replay attack on record-level DP noise, against the old and the new construction.

The attack (security review): record-level DP-SGD used to draw its Gaussian noise from
``torch.Generator().manual_seed(s)``, ``s`` a 63-bit seed. Torch's CPU generator keeps
only the low 32 bits of ``s``, so a server that receives a user's update Δ can try all
2³² seeds, regenerate the noise each would have produced, and find the one whose noise
correlates with Δ on the rows no example touched (there Δ is the noise alone: with SGD
and one step, ``Δ = −lr·z/b``, ``z ~ N(0, σ²C²)``). It then subtracts the noise and holds
the noiseless update — no privacy at all.

Here the attacker's search is cut down to what runs in seconds: every seed below
``N_SMALL_SEEDS``, the 32-bit reductions of seeds one could guess (small constants, the
wall clock around now, and — for the old construction — the seed actually used, which a
full 2³² search would reach). Against the emulated old construction the replay finds the
seed and removes the noise exactly; against ``train_user_private`` (noise from a
ChaCha20 :class:`~fedrec.core.privacy.secure_random.SecureRandom` keyed by the OS) no
candidate correlates, and two runs with identical inputs carry unrelated noise.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pytest
import torch
from opacus.optimizers import DPOptimizerFastGradientClipping

from fedrec.core.data.split import NO_ITEM, UserData
from fedrec.core.models.base import global_state
from fedrec.core.models.registry import build_model
from fedrec.core.privacy import record_level
from fedrec.core.privacy.record_level import RecordDP, train_user_private
from fedrec.core.privacy.secure_random import SecureRandom, secure_generator
from fedrec.core.training.implicit import TrainingConfig
from fedrec.core.training.local_round import LocalResult, new_local_parameters

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

N_ITEMS, DIM = 500, 16
POSITIVES = np.array([3, 50, 97, 144, 191], dtype=np.int64)
LR, SIGMA, CLIP, DIVISOR = 0.1, 1.0, 1.0, 4
N_SMALL_SEEDS = 16_384
MATCH = 0.1  # |correlation| above this is a match; a wrong seed's is ≈ N(0, 1/√7920) ≈ ±0.011


def _round(rng: SecureRandom) -> LocalResult:
    """One private round of MF: q = 1, one step (local_epochs=1, user_epochs=0), SGD, σ = 1."""
    model = build_model("mf", 1, N_ITEMS, DIM, seed=0)
    global_arrays = {k: v.detach().numpy().copy() for k, v in global_state(model).items()}
    local_arrays = new_local_parameters("mf", N_ITEMS, DIM, seed=0, user=0)
    user = UserData(0, N_ITEMS, POSITIVES, NO_ITEM, NO_ITEM, None)
    config = TrainingConfig(lr=LR, batch_size=DIVISOR, negatives=2, optimizer="sgd")
    dp = RecordDP(SIGMA, CLIP, "rdp", "ghost", sample_rate=1.0, divisor=DIVISOR)
    result, history = train_user_private("mf", DIM, global_arrays, local_arrays, user, config,
                                         local_epochs=1, user_epochs=0, rng=rng, dp=dp)
    assert history == [(SIGMA, 1.0, 1)]
    return result


@contextmanager
def _old_noise(seed: int) -> Iterator[None]:
    """Emulates the OLD construction: Opacus' own ``add_noise`` with a
    ``torch.Generator().manual_seed(seed)``, ``seed`` 63 bits (as ``rng.integers(0, 2**63 - 1)``
    used to give)."""
    generator = torch.Generator().manual_seed(seed)
    original = record_level.SecureNoiseGhostOptimizer.add_noise

    def add_noise(self: DPOptimizerFastGradientClipping) -> None:
        self.generator = generator
        DPOptimizerFastGradientClipping.add_noise(self)

    record_level.SecureNoiseGhostOptimizer.add_noise = add_noise  # type: ignore[method-assign]
    try:
        yield
    finally:
        record_level.SecureNoiseGhostOptimizer.add_noise = original  # type: ignore[method-assign]


def _released_noise_rows(result: LocalResult) -> np.ndarray:
    """The item table's Δ on rows that are not the user's positives, flattened (float64).

    Negatives touch at most 10 more rows; their clipped gradients (total norm ≤ 5·C·lr/b)
    are negligible next to the noise on 7920 coordinates."""
    rows = np.setdiff1d(np.arange(N_ITEMS), POSITIVES)
    return result.update["item_embedding.weight"][rows].astype(np.float64).ravel()


def _candidate_noise(seeds: np.ndarray) -> torch.Tensor:
    """For each seed, the item-table noise (rows not positives, flattened) the old code
    would draw: parameters in order — the user vector (1, d), then the item table
    (n_items, d) — from one torch generator, unit std."""
    rows = torch.from_numpy(np.setdiff1d(np.arange(N_ITEMS), POSITIVES))
    out = torch.empty((len(seeds), N_ITEMS, DIM))
    for i, seed in enumerate(seeds):
        generator = torch.Generator().manual_seed(int(seed))
        torch.normal(0.0, 1.0, size=(1, DIM), generator=generator)  # the user vector's draw
        out[i] = torch.normal(0.0, 1.0, size=(N_ITEMS, DIM), generator=generator)
    return out[:, rows].reshape(len(seeds), -1)


def _replay(delta: np.ndarray, seeds: np.ndarray) -> tuple[int, float]:
    """The attacker: the candidate seed whose noise best correlates with Δ, and that correlation."""
    centred = delta - delta.mean()
    target = torch.from_numpy(centred / np.linalg.norm(centred)).float()
    best_seed, best = -1, 0.0
    for start in range(0, len(seeds), 1024):
        chunk = seeds[start:start + 1024]
        noise = _candidate_noise(chunk)
        noise -= noise.mean(dim=1, keepdim=True)
        corr = (noise @ target / noise.norm(dim=1)).numpy()
        i = int(np.argmax(np.abs(corr)))
        if abs(corr[i]) > abs(best):
            best_seed, best = int(chunk[i]), float(corr[i])
    return best_seed, best


def _guessable_seeds(extra: list[int] = ()) -> np.ndarray:
    """What the attacker tries here: small seeds, common constants, the clock (± 10 min) and
    ``extra``, all reduced to the 32 bits torch keeps."""
    now = int(time.time())
    guesses = [*range(N_SMALL_SEEDS), 42, 1234, 12345, 2**31 - 1, 2**32 - 1,
               *range(now - 600, now + 600), *extra]
    return np.unique(np.array([g % 2**32 for g in guesses], dtype=np.int64))


def test_torch_keeps_only_32_bits_of_a_seed() -> None:
    """The premise: a 63-bit seed and its low 32 bits give the same noise."""
    seed = (0x5DEECE66D << 28) | 0x2F3A1B4C  # 63 bits
    assert 2**62 <= seed < 2**63
    a = torch.normal(0.0, 1.0, size=(64,), generator=torch.Generator().manual_seed(seed))
    b = torch.normal(0.0, 1.0, size=(64,), generator=torch.Generator().manual_seed(seed % 2**32))
    assert torch.equal(a, b)


def test_the_replay_breaks_the_old_construction() -> None:
    """Noise from ``torch.Generator().manual_seed(63-bit seed)``: the replay from
    ``seed % 2**32`` finds it, and subtracting it leaves Δ = 0 on the untouched rows."""
    seed = int(np.random.default_rng(2024).integers(0, 2**63 - 1))
    with _old_noise(seed):
        result = _round(secure_generator())
    delta = _released_noise_rows(result)
    found, corr = _replay(delta, _guessable_seeds(extra=[seed]))
    assert found == seed % 2**32 and corr < -0.999  # Δ = −lr·z/b: perfectly anti-correlated
    # the attacker removes the noise: Δ + lr·σ·C·z/b = 0 up to float32 rounding, except on
    # the ≤ 10 rows the negatives touched (there the clipped gradient is left: what DP hid)
    noise = _candidate_noise(np.array([found]))[0].numpy().astype(np.float64)
    recovered = (delta + LR * SIGMA * CLIP / DIVISOR * noise).reshape(-1, DIM)
    exact = np.abs(recovered).max(axis=1) < 1e-6
    assert np.abs(delta).max() > 1e-2 and (~exact).sum() <= 10


def test_the_replay_finds_nothing_in_secure_noise() -> None:
    """``train_user_private`` with an OS-keyed SecureRandom: no candidate seed correlates."""
    delta = _released_noise_rows(_round(secure_generator()))
    assert np.std(delta) == pytest.approx(LR * SIGMA * CLIP / DIVISOR, rel=0.05)  # the noise is there
    seeds = _guessable_seeds()
    assert len(seeds) > N_SMALL_SEEDS
    _, corr = _replay(delta, seeds)
    assert abs(corr) < MATCH


def test_identical_runs_carry_unrelated_noise() -> None:
    """Two rounds with the same config and inputs: their untouched rows' Δ do not correlate."""
    first = _released_noise_rows(_round(secure_generator()))
    second = _released_noise_rows(_round(secure_generator()))
    assert not np.array_equal(first, second)
    assert abs(np.corrcoef(first, second)[0, 1]) < MATCH
    # the control: a fixed test key replays exactly — which is why no key ever comes from config
    key = bytes(range(32))
    again = [_released_noise_rows(_round(SecureRandom(key=key))) for _ in range(2)]
    assert np.array_equal(again[0], again[1])
