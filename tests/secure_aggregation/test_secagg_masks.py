"""The mask PRG: exactly uniform on Z_m (m − 1 included), a function of its seed only."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fedrec.secure_aggregation.masks import check_vector, prg_mask


@pytest.mark.parametrize("bits", [4, 20, 40])
def test_masks_cover_z_m_evenly_and_depend_only_on_the_seed(bits: int) -> None:
    seed = os.urandom(32)
    mask = prg_mask(seed, 1 << 14, bits)
    assert mask.dtype == np.uint64 and int(mask.max()) < 1 << bits
    np.testing.assert_array_equal(prg_mask(seed, 1 << 14, bits), mask)
    assert np.mean(prg_mask(os.urandom(32), 1 << 14, bits) == mask) < 0.1
    # the top 4 bits of every entry, 16 residues: Pearson χ² with df = 15, and the top residue occurs
    top = (mask >> np.uint64(bits - 4)).astype(np.int64)
    counts = np.bincount(top, minlength=16)
    expected = mask.size / 16
    assert float(((counts - expected) ** 2 / expected).sum()) < 15 + 6 * np.sqrt(30)
    if bits == 4:
        assert counts[15] > 0  # m − 1 itself is drawn (Flower's randint(0, m − 1) never draws it)


def test_a_seed_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        prg_mask(b"x" * 16, 8, 20)


def test_input_vectors_are_checked() -> None:
    assert check_vector([1, 2, 3], 3, 2, "v").dtype == np.uint64
    with pytest.raises(ValueError, match="negative"):
        check_vector(np.array([-1, 0, 0]), 3, 20, "v")
    with pytest.raises(ValueError, match="integers"):
        check_vector(np.zeros(3), 3, 20, "v")
    with pytest.raises(ValueError, match="≥ m"):
        check_vector(np.array([0, 4, 0]), 3, 2, "v")


def test_masked_vectors_travel_in_the_narrowest_unsigned_type() -> None:
    from fedrec.secure_aggregation.masks import wire_dtype

    assert [wire_dtype(bits) for bits in (1, 8, 9, 20, 32, 33, 64)] == [
        np.uint8, np.uint8, np.uint16, np.uint32, np.uint32, np.uint64, np.uint64]
