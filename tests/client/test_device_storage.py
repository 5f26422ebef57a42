"""Encryption at rest, the device state file, and a device's CSV over the catalogue."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fedrec.client.device_state import STATE_FILE, DeviceState, load_state, save_state
from fedrec.client.encrypted_file import (
    PASSPHRASE_ENV,
    KeySource,
    StateDecryptionError,
    decrypt,
    encrypt,
    prepare_key,
    read_encrypted,
    write_encrypted,
)
from fedrec.client.local_data import load_local_data
from fedrec.core.data.catalogue import catalogue_digest, read_catalogue


def test_key_file_is_made_0600_and_round_trips(tmp_path: Path) -> None:
    source = KeySource(key_file=tmp_path / "state.key")
    assert "key file" in prepare_key(source)
    assert (tmp_path / "state.key").stat().st_mode & 0o777 == 0o600
    write_encrypted(tmp_path / "s.enc", b"user vector 0.125", source)
    assert read_encrypted(tmp_path / "s.enc", source) == b"user vector 0.125"
    assert b"user vector" not in (tmp_path / "s.enc").read_bytes()
    assert not list(tmp_path.glob("*.tmp"))


def test_two_writes_of_the_same_plaintext_differ(tmp_path: Path) -> None:
    source = KeySource(key_file=tmp_path / "state.key")
    assert encrypt(b"same", source) != encrypt(b"same", source)  # a fresh nonce each time


def test_wrong_key_and_altered_byte_are_refused(tmp_path: Path) -> None:
    source = KeySource(key_file=tmp_path / "a.key")
    blob = bytearray(encrypt(b"secret", source))
    other = KeySource(key_file=tmp_path / "b.key")
    prepare_key(other)
    with pytest.raises(StateDecryptionError, match="wrong key"):
        decrypt(bytes(blob), other)
    blob[-1] ^= 1
    with pytest.raises(StateDecryptionError, match="altered"):
        decrypt(bytes(blob), source)
    with pytest.raises(StateDecryptionError, match="not a fedrec"):
        decrypt(b"plain text that is long enough to have a header....", source)


def test_passphrase_key_needs_the_passphrase(tmp_path: Path) -> None:
    source = KeySource.for_state_dir(tmp_path, {PASSPHRASE_ENV: "correct horse"})
    assert source.passphrase == b"correct horse" and not (tmp_path / "state.key").exists()
    blob = encrypt(b"vector", source)
    assert decrypt(blob, source) == b"vector"
    with pytest.raises(StateDecryptionError, match="wrong key or passphrase"):
        decrypt(blob, KeySource(passphrase=b"wrong"))
    with pytest.raises(StateDecryptionError, match=PASSPHRASE_ENV):
        decrypt(blob, KeySource.for_state_dir(tmp_path, {}))


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    source = KeySource(key_file=tmp_path / "state.key")
    prepare_key(source)
    os.chmod(tmp_path / "state.key", 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        encrypt(b"x", source)


def test_device_state_round_trips_and_holds_no_plaintext(tmp_path: Path) -> None:
    vector = np.array([[0.123456, -7.5, 3.25, 1e-3]], dtype=np.float32)
    state = DeviceState(
        vectors={"alice/1": {"user_embedding.weight": vector}, "bob": {"user_embedding.weight": -vector}},
        histories={"alice/1": [(1.1, 0.5, 3), (0.9, 1.0, 1)]},
        global_model={"item_embedding.weight": np.ones((3, 4), dtype=np.float32)},
        meta={"model": "mf", "catalogue": ["a", "b", "c"]},
    )
    save_state(tmp_path, state)
    loaded = load_state(tmp_path)
    assert loaded.histories == state.histories and loaded.meta == state.meta
    assert set(loaded.vectors) == {"alice/1", "bob"}
    np.testing.assert_array_equal(loaded.vectors["alice/1"]["user_embedding.weight"], vector)
    np.testing.assert_array_equal(loaded.global_model["item_embedding.weight"], np.ones((3, 4)))
    on_disk = (tmp_path / STATE_FILE).read_bytes()
    assert vector.tobytes() not in on_disk and b"alice" not in on_disk
    assert (tmp_path / STATE_FILE).stat().st_mode & 0o777 == 0o600


def test_first_start_has_an_empty_state(tmp_path: Path) -> None:
    state = load_state(tmp_path / "new")
    assert not state.vectors and not state.global_model and not state.histories


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_local_data_maps_items_through_the_catalogue(tmp_path: Path) -> None:
    catalogue = ("i10", "i20", "i30", "i40", "i50")
    data = _write(tmp_path / "d.csv", "user,item,rating,timestamp\n"
                  "u2,i30,4,1\nu2,i10,5,2\nu2,i50,3,3\nu1,i20,1,5\nu1,zzz,1,6\nu1,i40,2,7\n")
    local = load_local_data(data, catalogue, seed=0)
    assert local.user_ids == ("u1", "u2") and local.unknown_item_rows == 1
    split = local.split
    assert split.n_items == 5
    # u2 (dense 1): i30 (row 2) trains, i10 validates, i50 (row 4) is the test item
    assert list(split.train_items_of(1)) == [2] and split.validation_item[1] == 0 and split.test_item[1] == 4
    # u1 (dense 0): i20 trains, i40 is the test item (the unknown item is gone)
    assert list(split.train_items_of(0)) == [1] and split.test_item[0] == 3
    with pytest.raises(KeyError, match="not in this device"):
        local.user_index("u9")


def test_local_data_with_no_known_item_is_refused(tmp_path: Path) -> None:
    data = _write(tmp_path / "d.csv", "u1,x\nu1,y\n")
    with pytest.raises(ValueError, match="none of its items"):
        load_local_data(data, ("a", "b"), seed=0)


def test_catalogue_file_checks(tmp_path: Path) -> None:
    assert read_catalogue(_write(tmp_path / "ok.txt", "a\nb\n\nc\n")) == ("a", "b", "c")
    with pytest.raises(ValueError, match="more than once"):
        read_catalogue(_write(tmp_path / "dup.txt", "a\nb\na\n"))
    with pytest.raises(ValueError, match="no items"):
        read_catalogue(_write(tmp_path / "empty.txt", "\n"))
    with pytest.raises(FileNotFoundError):
        read_catalogue(tmp_path / "missing.txt")
    assert catalogue_digest(("a", "b")) != catalogue_digest(("b", "a"))
