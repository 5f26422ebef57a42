"""Checkpoints: round trip, and a missing checkpoint is a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrec.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint


def test_round_trip_keeps_arrays_round_optimizer_state_and_config(tmp_path: Path) -> None:
    arrays = {"item_embedding.weight": np.arange(6, dtype=np.float32).reshape(3, 2)}
    state = {"m": {"item_embedding.weight": np.ones((3, 2), dtype=np.float32)}}
    save_checkpoint(tmp_path, Checkpoint(7, arrays, state, {"model": "mf"}))
    loaded = load_checkpoint(tmp_path)
    assert loaded.round == 7 and loaded.config == {"model": "mf"}
    assert np.array_equal(loaded.global_arrays["item_embedding.weight"], arrays["item_embedding.weight"])
    assert np.array_equal(loaded.optimizer_state["m"]["item_embedding.weight"], np.ones((3, 2)))
    # a later checkpoint replaces the earlier one
    save_checkpoint(tmp_path, Checkpoint(8, {k: v + 1 for k, v in arrays.items()}, {}, {"model": "mf"}))
    assert load_checkpoint(tmp_path).round == 8


def test_missing_checkpoint_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_checkpoint(tmp_path)
