"""A deployed device's state directory: user vectors, accountant histories, last global model.

What a device keeps between rounds, runs and restarts — everything that must survive
the SuperNode process — lives in one file, ``STATE_DIR/state.enc``, encrypted at rest
(:mod:`fedrec.client.encrypted_file`):

* each local user's **private parameters** (user vector), keyed by the user's raw id
  from the device's CSV, so adding users to the CSV never re-assigns a vector;
* each user's **accountant history** ``[(σ, q, steps), …]``, so the ε a user has spent
  is never reset by a restart or a new run;
* the **last global model** received (names, arrays) with the model name, dimension
  and the item catalogue, so ``fedrec client recommend`` works offline.

The plaintext is an ``.npz`` archive (arrays only, loaded with ``allow_pickle=False``)
plus a JSON header; nothing is pickled. ``state.lock`` serialises readers and writers
(the ClientApp and ``fedrec client recommend``) with ``flock``.
"""

from __future__ import annotations

import fcntl
import io
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fedrec.client.encrypted_file import KeySource, read_encrypted, write_encrypted
from fedrec.core.arrays import Arrays
from fedrec.core.privacy.accounting import Step

STATE_FILE = "state.enc"
LOCK_FILE = "state.lock"
FORMAT_VERSION = 1
_META = "meta.json"



@dataclass
class DeviceState:
    """The decrypted state of one device (see the module docstring)."""

    vectors: dict[str, Arrays] = field(default_factory=dict)
    histories: dict[str, list[Step]] = field(default_factory=dict)
    global_model: Arrays = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        users = sorted(self.vectors)
        arrays: dict[str, np.ndarray] = {}
        for index, user in enumerate(users):
            for name, value in self.vectors[user].items():
                arrays[f"user/{index}/{name}"] = np.asarray(value)
        for name, value in self.global_model.items():
            arrays[f"global/{name}"] = np.asarray(value)
        header = {
            "version": FORMAT_VERSION,
            "users": users,
            "histories": {user: [[float(s), float(q), int(n)] for s, q, n in steps]
                          for user, steps in self.histories.items()},
            "meta": self.meta,
        }
        arrays[_META] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "DeviceState":
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            files = {name: archive[name] for name in archive.files}
        if _META not in files:
            raise ValueError("device state has no header")
        header = json.loads(files.pop(_META).tobytes().decode("utf-8"))
        if header.get("version") != FORMAT_VERSION:
            raise ValueError(f"device state format {header.get('version')!r} is not {FORMAT_VERSION}")
        users = header["users"]
        state = cls(meta=dict(header.get("meta", {})))
        state.histories = {user: [(float(s), float(q), int(n)) for s, q, n in steps]
                           for user, steps in header.get("histories", {}).items()}
        for key, value in files.items():
            kind, _, rest = key.partition("/")
            if kind == "global":
                state.global_model[rest] = value
            elif kind == "user":
                index, _, name = rest.partition("/")
                state.vectors.setdefault(users[int(index)], {})[name] = value
            else:
                raise ValueError(f"device state holds an unknown entry {key!r}")
        return state


@contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Exclusive lock on the state directory for a read-modify-write."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (state_dir / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def load_state(state_dir: Path, source: KeySource | None = None) -> DeviceState:
    """The device state (empty on first start); raises when it cannot be decrypted."""
    path = Path(state_dir) / STATE_FILE
    if not path.exists():
        return DeviceState()
    source = source or KeySource.for_state_dir(state_dir)
    return DeviceState.from_bytes(read_encrypted(path, source))


def save_state(state_dir: Path, state: DeviceState, source: KeySource | None = None) -> None:
    """Encrypt and write the state atomically."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    source = source or KeySource.for_state_dir(state_dir)
    write_encrypted(state_dir / STATE_FILE, state.to_bytes(), source)
