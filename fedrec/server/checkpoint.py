"""Checkpoints of the global model: arrays, round number and server-optimiser state.

Layout in the run directory::

    checkpoint/global.npz      global arrays (what the model declares global)
    checkpoint/optimizer.npz   server-optimiser state (FedAdam moments), if any
    checkpoint/state.json      {"round": r, "config": {...}}

Each file is written to a temporary name and renamed, and ``state.json`` — written
last — names the round, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedrec.core.arrays import Arrays

CHECKPOINT_DIR = "checkpoint"
GLOBAL_FILE = "global.npz"
OPTIMIZER_FILE = "optimizer.npz"
STATE_FILE = "state.json"
MODEL_FILE = "model.npz"



@dataclass(frozen=True)
class Checkpoint:
    round: int
    global_arrays: Arrays
    optimizer_state: dict[str, Arrays]
    config: dict[str, Any]


def save_arrays(path: Path, arrays: Arrays) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_arrays(path: Path) -> Arrays:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> None:
    folder = run_dir / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    save_arrays(folder / GLOBAL_FILE, checkpoint.global_arrays)
    flat = {f"{group}/{name}": value for group, arrays in checkpoint.optimizer_state.items()
            for name, value in arrays.items()}
    save_arrays(folder / OPTIMIZER_FILE, flat)
    tmp = folder / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps({"round": checkpoint.round, "config": checkpoint.config}, indent=2))
    os.replace(tmp, folder / STATE_FILE)


def load_checkpoint(run_dir: Path) -> Checkpoint:
    folder = run_dir / CHECKPOINT_DIR
    state_path = folder / STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(f"no checkpoint in {run_dir} (missing {CHECKPOINT_DIR}/{STATE_FILE})")
    state = json.loads(state_path.read_text())
    optimizer_state: dict[str, Arrays] = {}
    for key, value in load_arrays(folder / OPTIMIZER_FILE).items():
        group, name = key.split("/", 1)
        optimizer_state.setdefault(group, {})[name] = value
    return Checkpoint(int(state["round"]), load_arrays(folder / GLOBAL_FILE), optimizer_state, state["config"])


def checkpointed_config(run_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The run config (run-config keys) of a checkpointed run, with ``overrides`` applied and
    ``resume`` set, for continuing it."""
    state_path = run_dir / CHECKPOINT_DIR / STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(f"cannot resume {run_dir}: no checkpoint there")
    saved = dict(json.loads(state_path.read_text())["config"])
    saved.update(overrides)
    saved.update({"resume": True, "out-dir": str(run_dir.resolve())})
    return saved
