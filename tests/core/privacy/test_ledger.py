"""The privacy ledger: append-only, hash-chained, durable, readable only when sound."""

from __future__ import annotations

import dataclasses
import math
import sqlite3
from pathlib import Path

import pytest

from fedrec.core.privacy.ledger import (
    LEDGER_FILE,
    LedgerError,
    PrivacyLedger,
    read_heads,
    read_ledger,
)
from fedrec.core.privacy.ledger_chain import (
    GENESIS,
    anchor_problems,
    head_statement,
    row_hash,
    unanchored_rows,
    verify_chain,
)
from fedrec.core.privacy.ledger_rows import RELEASES, LedgerEntry
from fedrec.core.privacy.modes import MODE_RELATION
from fedrec.core.privacy.signing import LedgerSigner, verify_ed25519


def entry(round_: int = 1, who: str = "client:7", epsilon: float = 0.5, **changes) -> LedgerEntry:
    base = LedgerEntry(run_id="run-1", round=round_, unit="record", mode="record", who=who,
                       noise_multiplier=1.1, sample_rate=0.05, steps=20, clip_norm=1.0,
                       delta=1e-5, accountant="rdp", epsilon=epsilon, budget=8.0,
                       relation="add-remove", sensitivity=1.0)
    return dataclasses.replace(base, **changes)


SIGNER = LedgerSigner.generate()


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    path = tmp_path / LEDGER_FILE
    with PrivacyLedger(path) as ledger:
        ledger.append([entry(1, "client:1", 0.3), entry(1, "client:2", 0.4)])
        ledger.sign_head(1, False, "a" * 64, "", SIGNER)
        ledger.append([entry(2, "client:1", 0.5)])
        ledger.sign_head(2, False, "a" * 64, "", SIGNER)
        ledger.append([entry(3, "client:2", 0.6), entry(3, "client:1", 0.7)])
        ledger.sign_head(3, True, "a" * 64, "", SIGNER)
    return path


def test_rows_round_trip_in_order_with_an_intact_chain(ledger_path: Path) -> None:
    rows = read_ledger(ledger_path)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert [(r.round, r.who, r.epsilon) for r in rows] == [
        (1, "client:1", 0.3), (1, "client:2", 0.4), (2, "client:1", 0.5),
        (3, "client:2", 0.6), (3, "client:1", 0.7)]
    assert rows[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:]))
    assert rows[2].entry == entry(2, "client:1", 0.5)
    assert verify_chain(rows) == []


def test_head_and_append_return_the_last_hash(tmp_path: Path) -> None:
    with PrivacyLedger(tmp_path / LEDGER_FILE) as ledger:
        assert ledger.head() == (0, GENESIS)
        head = ledger.append([entry(1), entry(2)])
        assert ledger.head() == (2, head)
        assert ledger.append([]) == head
    rows = read_ledger(tmp_path / LEDGER_FILE)
    assert rows[-1].hash == head
    assert head == row_hash(rows[0].hash, 2, entry(2))


def test_reopening_continues_the_chain(ledger_path: Path) -> None:
    with PrivacyLedger(ledger_path) as ledger:
        count, _ = ledger.head()
        ledger.append([entry(4, "client:1", 0.9)])
    rows = read_ledger(ledger_path)
    assert len(rows) == count + 1 and verify_chain(rows) == []


def test_infinite_epsilon_and_no_budget_round_trip(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    with PrivacyLedger(path) as ledger:
        ledger.append([entry(noise_multiplier=0.0, epsilon=math.inf, budget=None)])
    (row,) = read_ledger(path)
    assert row.epsilon == math.inf and row.budget is None
    assert verify_chain([row]) == []


def test_every_append_is_committed_before_it_returns(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ledger = PrivacyLedger(path)
    ledger.append([entry(1)])
    assert len(read_ledger(path)) == 1  # another connection sees it while the writer is open
    ledger.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    db.close()


@pytest.mark.parametrize("change, message", [
    ({"unit": "user"}, "protects unit"),
    ({"mode": "central"}, "mode must be"),
    ({"accountant": "moments"}, "accountant must be"),
    ({"noise_multiplier": -1.0}, "noise_multiplier"),
    ({"noise_multiplier": math.nan}, "noise_multiplier"),
    ({"sample_rate": 0.0}, "sample_rate"),
    ({"sample_rate": 1.5}, "sample_rate"),
    ({"steps": -1}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"clip_norm": 0.0}, "clip_norm"),
    ({"delta": 0.0}, "delta"),
    ({"delta": 1.0}, "delta"),
    ({"epsilon": -0.1}, "epsilon"),
    ({"epsilon": math.nan}, "epsilon"),
    ({"budget": 0.0}, "budget"),
    ({"who": "server"}, "client:<id>"),
    ({"mode": "user-central", "unit": "user"}, "server"),
    ({"run_id": ""}, "run_id"),
    ({"relation": "replace-one"}, "relation"),
    ({"mode": "user-local", "unit": "user"}, "relation"),
    ({"relation": "swap"}, "relation"),
    ({"sensitivity": 0.0}, "sensitivity"),
    ({"sensitivity": -1.0}, "sensitivity"),
    ({"sensitivity": math.inf}, "sensitivity"),
    ({"sensitivity": math.nan}, "sensitivity"),
    ({"release": "test"}, "release"),
    ({"device_signature": "not hex"}, "device_signature"),
])
def test_nonsense_entries_are_refused_and_nothing_is_written(
        tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / LEDGER_FILE
    with PrivacyLedger(path) as ledger:
        with pytest.raises(ValueError, match=message):
            ledger.append([entry(1), entry(2, **change)])
        assert ledger.head() == (0, GENESIS)


@pytest.mark.parametrize("statement", [
    "UPDATE ledger SET epsilon = 0.01 WHERE seq = 2",
    "DELETE FROM ledger WHERE seq = 5",
    "DELETE FROM meta",
    "UPDATE heads SET rows = 1",
    "DELETE FROM heads",
])
def test_triggers_refuse_update_and_delete(ledger_path: Path, statement: str) -> None:
    db = sqlite3.connect(ledger_path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute(statement)
    db.close()
    assert len(read_ledger(ledger_path)) == 5


def tamper(path: Path, *statements: str) -> None:
    """What someone with write access does: drop the triggers, then edit."""
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER ledger_no_update")
    db.execute("DROP TRIGGER ledger_no_delete")
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def test_an_edited_field_breaks_the_chain(ledger_path: Path) -> None:
    tamper(ledger_path, "UPDATE ledger SET epsilon = 0.05 WHERE seq = 3")
    problems = verify_chain(read_ledger(ledger_path))
    assert len(problems) == 1 and "seq=3" in problems[0] and "edited" in problems[0]


def test_a_deleted_middle_row_breaks_the_chain(ledger_path: Path) -> None:
    tamper(ledger_path, "DELETE FROM ledger WHERE seq = 2")
    problems = verify_chain(read_ledger(ledger_path))
    assert any("seq is 3, expected 2" in p for p in problems)
    assert any("prev_hash" in p for p in problems)


def test_a_deleted_last_row_passes_the_chain_but_not_the_anchors(ledger_path: Path) -> None:
    anchors = [(2, read_ledger(ledger_path)[1].hash), (5, read_ledger(ledger_path)[4].hash)]
    assert anchor_problems(read_ledger(ledger_path), anchors) == []
    tamper(ledger_path, "DELETE FROM ledger WHERE seq = 5")
    rows = read_ledger(ledger_path)
    assert verify_chain(rows) == []
    (problem,) = anchor_problems(rows, anchors)
    assert "row 5 is missing" in problem


def test_anchor_with_the_wrong_hash_and_rows_after_the_last_anchor(ledger_path: Path) -> None:
    rows = read_ledger(ledger_path)
    assert anchor_problems(rows, [(0, GENESIS)]) == []
    (problem,) = anchor_problems(rows, [(3, rows[2].prev_hash)])
    assert "row 3" in problem and "rewritten" in problem
    assert unanchored_rows(rows, [(3, rows[2].hash)]) == 2
    assert unanchored_rows(rows, []) == 5


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="file not found"):
        read_ledger(tmp_path / LEDGER_FILE)


def test_random_bytes_are_not_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    path.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(LedgerError, match="not a readable SQLite"):
        read_ledger(path)
    with pytest.raises(LedgerError, match="not a readable SQLite"):
        PrivacyLedger(path)


def test_foreign_sqlite_file_is_not_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="not a fedrec privacy ledger"):
        read_ledger(path)
    with pytest.raises(LedgerError, match="not a fedrec privacy ledger"):
        PrivacyLedger(path)


def test_missing_column_is_a_clear_error(ledger_path: Path) -> None:
    db = sqlite3.connect(ledger_path)
    db.execute("DROP TRIGGER ledger_no_update")
    db.execute("DROP TRIGGER ledger_no_delete")
    db.execute("ALTER TABLE ledger DROP COLUMN budget")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match=r"lacks columns \['budget'\]"):
        read_ledger(ledger_path)


def test_wrong_type_in_a_column_is_a_clear_error(ledger_path: Path) -> None:
    tamper(ledger_path, "UPDATE ledger SET epsilon = 'small' WHERE seq = 1")
    with pytest.raises(LedgerError, match="seq=1: column epsilon"):
        read_ledger(ledger_path)


def test_numpy_scalars_are_stored_as_plain_numbers(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    path = tmp_path / LEDGER_FILE
    with PrivacyLedger(path) as ledger:
        head = ledger.append([entry(round_=np.int64(3), steps=np.int64(20), sample_rate=np.float32(0.25),
                                    epsilon=np.float64(0.5))])
    (row,) = read_ledger(path)
    assert (row.round, row.steps, row.sample_rate, row.epsilon) == (3, 20, 0.25, 0.5)
    assert row.hash == head and verify_chain([row]) == []


def test_a_broken_chain_is_not_continued(ledger_path: Path) -> None:
    tamper(ledger_path, "UPDATE ledger SET epsilon = 0.05 WHERE seq = 3")
    with pytest.raises(LedgerError, match="hash chain is broken"):
        PrivacyLedger(ledger_path)


# --- schema version 2: relation, sensitivity, release, device signature; signed heads ---------

def test_contract_constants() -> None:
    assert MODE_RELATION == {"record": "add-remove", "user-local": "replace-one", "user-central": "add-remove",
                             "user-distributed": "zero-out", "record-distributed": "add-remove"}
    assert RELEASES == ("train", "evaluate")


def test_v2_fields_round_trip(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    local = entry(1, mode="user-local", unit="user", relation="replace-one", sensitivity=2.0, sample_rate=1.0,
                  steps=1, release="train", device_signature="ab" * 40)
    evaluate = entry(1, mode="user-local", unit="user", relation="replace-one", sensitivity=math.sqrt(2),
                     sample_rate=1.0, steps=1, release="evaluate")
    with PrivacyLedger(path) as ledger:
        ledger.append([local, evaluate])
    rows = read_ledger(path)
    assert [r.entry for r in rows] == [local, evaluate]
    assert rows[1].release == "evaluate" and rows[1].device_signature == ""  # the defaults
    assert rows[0].sensitivity == 2.0 and rows[0].relation == "replace-one"
    assert verify_chain(rows) == []


def test_user_central_evaluate_rows_may_be_a_clients(tmp_path: Path) -> None:
    central = dict(mode="user-central", unit="user", relation="add-remove")
    with PrivacyLedger(tmp_path / LEDGER_FILE) as ledger:
        ledger.append([entry(1, "server", **central),
                       entry(1, "client:3", **central, release="evaluate", sample_rate=1.0, steps=1)])
        with pytest.raises(ValueError, match="train rows are the server's"):
            ledger.append([entry(2, "client:3", **central)])


@pytest.mark.parametrize("name, value", [
    ("relation", "replace-one"), ("sensitivity", 2.0), ("release", "evaluate"), ("device_signature", "00")])
def test_the_hash_covers_the_new_fields(name: str, value: object) -> None:
    original = entry()
    assert row_hash(GENESIS, 1, original) != row_hash(GENESIS, 1, dataclasses.replace(original, **{name: value}))


@pytest.mark.parametrize("column, value", [
    ("relation", "'replace-one'"), ("sensitivity", "3.0"), ("release", "'evaluate'"), ("device_signature", "'ff'")])
def test_an_edited_new_column_breaks_the_chain(ledger_path: Path, column: str, value: str) -> None:
    tamper(ledger_path, f"UPDATE ledger SET {column} = {value} WHERE seq = 2")
    problems = verify_chain(read_ledger(ledger_path))
    assert len(problems) == 1 and "seq=2" in problems[0]


def test_a_version_1_ledger_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("CREATE TABLE ledger (seq INTEGER PRIMARY KEY, run_id TEXT)")
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("format", "fedrec-privacy-ledger"), ("version", "1")])
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="version '1'.*reads only version '2'"):
        read_ledger(path)
    with pytest.raises(LedgerError, match="version '1'"):
        PrivacyLedger(path)


def test_signed_heads_round_trip_and_verify(ledger_path: Path) -> None:
    rows = read_ledger(ledger_path)
    heads = read_heads(ledger_path)
    assert [(h.round, h.rows, h.final) for h in heads] == [(1, 2, False), (2, 3, False), (3, 5, True)]
    assert [h.head for h in heads] == [rows[1].hash, rows[2].hash, rows[4].hash]
    for head in heads:
        assert head.statement.encode() == head_statement("run-1", head.round, head.rows, head.head, head.final,
                                                         "a" * 64, "")
        assert head.public_key == SIGNER.public_key_hex()
        assert verify_ed25519(head.public_key, head.statement.encode(), head.signature)
        assert head.claims()["run_id"] == "run-1"


def test_sign_head_of_an_empty_ledger_needs_the_run_id(tmp_path: Path) -> None:
    with PrivacyLedger(tmp_path / "a.db") as ledger:
        with pytest.raises(LedgerError, match="run id"):
            ledger.sign_head(0, False, "", "", SIGNER)
    with PrivacyLedger(tmp_path / "b.db", run_id="run-9") as ledger:
        ledger.sign_head(0, False, "", "", SIGNER)
    (head,) = read_heads(tmp_path / "b.db")
    assert (head.rows, head.head, head.claims()["run_id"]) == (0, GENESIS, "run-9")


def test_sign_head_refuses_a_malformed_digest(ledger_path: Path) -> None:
    with PrivacyLedger(ledger_path) as ledger:
        with pytest.raises(ValueError, match="plan_sha256"):
            ledger.sign_head(4, False, "xyz", "", SIGNER)
