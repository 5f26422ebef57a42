"""Offline recommendations from a device's state: personal, cold start, non-personal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrec.client.device_state import DeviceState, save_state
from fedrec.client.recommend import RecommendError, recommend
from fedrec.core.config.run_config import RunConfig
from fedrec.server.loop import initial_global_arrays

CATALOGUE = ["a", "b", "c", "d", "e", "f"]


def _device(tmp_path: Path, with_model: bool = True) -> Path:
    data = tmp_path / "me.csv"
    data.write_text("user,item,rating,timestamp\nu1,a,5,1\nu1,b,4,2\nu1,c,3,3\nu2,f,1,4\n")
    config = RunConfig(dataset="deployment", dim=4, catalogue="items.txt", reconstruct_epochs=2)
    arrays = initial_global_arrays(config, len(CATALOGUE))
    arrays["item_bias.weight"] = np.array([[0.0], [5.0], [1.0], [4.0], [2.0], [3.0]], dtype=np.float32)
    state = DeviceState(
        vectors={"u1": {"user_embedding.weight": np.full((1, 4), 0.1, dtype=np.float32)}},
        global_model=arrays if with_model else {},
        meta={"model": "mf", "dim": 4, "catalogue": CATALOGUE, "server_round": 7, "data_file": str(data),
              "run_config": config.to_user_config()},
    )
    save_state(tmp_path / "state", state)
    return tmp_path / "state"


def test_a_user_with_a_vector_gets_a_personal_list_without_seen_items(tmp_path: Path) -> None:
    (rec,) = recommend(_device(tmp_path), ["u1"], k=10)
    assert rec.kind == "personal" and rec.server_round == 7
    assert sorted(rec.items) == ["d", "e", "f"]  # a, b, c were seen; fewer than k are left
    assert rec.scores == sorted(rec.scores, reverse=True)


def test_a_user_without_a_vector_is_reconstructed_locally(tmp_path: Path) -> None:
    (rec,) = recommend(_device(tmp_path), ["u2"], k=3)
    assert rec.kind == "cold-start" and "f" not in rec.items and len(rec.items) == 3


def test_a_stranger_gets_the_global_models_item_bias_order(tmp_path: Path) -> None:
    (rec,) = recommend(_device(tmp_path), ["nobody"], k=4)
    assert rec.kind == "non-personal"
    assert rec.items == ["b", "d", "f", "e"]  # item biases 5, 4, 3, 2: no user's data involved
    assert rec.scores == pytest.approx([5.0, 4.0, 3.0, 2.0])


def test_every_user_of_the_device_by_default(tmp_path: Path) -> None:
    assert [r.user for r in recommend(_device(tmp_path), None, k=2)] == ["u1", "u2"]


def test_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(RecommendError, match="no global model"):
        recommend(_device(tmp_path / "a", with_model=False), ["u1"])
    with pytest.raises(RecommendError, match="k must be"):
        recommend(_device(tmp_path / "b"), ["u1"], k=0)
    with pytest.raises(RecommendError, match="does not exist"):
        recommend(tmp_path / "missing", ["u1"])
