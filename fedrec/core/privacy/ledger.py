"""The privacy ledger ``privacy.db``: one append-only, hash-chained row per mechanism run.

Every time a run applies a DP mechanism to some unit's data, it appends a row saying
who spent privacy (``who``: ``server`` or ``client:<id>``), on which unit (``record`` or
``user``), under which neighbouring relation (``relation``: ``add-remove`` or
``replace-one``, fixed by the mode: :data:`fedrec.core.privacy.modes.MODE_RELATION`), for which release (``train``
or ``evaluate``), with which mechanism parameters — the L2 ``sensitivity`` of the
released quantity under that relation, the noise multiplier σ = noise std / sensitivity
(the σ an add/remove accountant takes, so composition over ``(σ, q, steps)`` is the same
for both relations), the Poisson sampling rate q, the number of steps, the clip norm C —
and what that who's ε is after the row: the composition of all of its rows so far at δ,
by the named accountant. ``device_signature`` is a deployed device's countersignature of
the release (:func:`fedrec.core.privacy.signing.release_statement`), ``""`` when none.

Sensitivity by mode and release: ``train`` rows have ``2·C`` (user-local, replace-one:
one user's clipped update replaced by another) or ``C`` (record, user-central:
add/remove); ``evaluate`` rows have ``sqrt(K)`` for ``K`` released metrics, ``q = 1``,
one step.

The file is SQLite, written with ``journal_mode=DELETE`` and ``synchronous=FULL``: every
``append`` is one transaction that is on disk before it returns, and the whole ledger
lives in the one file (no ``-wal`` side file to lose when a run directory is copied).

Tamper evidence, in three layers:

* SQLite triggers refuse ``UPDATE`` and ``DELETE`` on the ledger (append-only);
* row ``k`` carries ``hash_k = sha256(hash_{k-1} ‖ canonical(row_k))`` with
  ``hash_0 = GENESIS``, where ``canonical`` is JSON with sorted keys, floats written as
  ``repr`` (exact, ``inf`` included) and ``seq`` included — so editing any field of any
  row, or deleting or reordering a row before the last, breaks the chain even for
  someone who dropped the triggers
  (:func:`~fedrec.core.privacy.ledger_chain.verify_chain`);
* deleting the *last* rows leaves a valid shorter chain; the run's ``metrics.jsonl``
  records an anchor ``(ledger_rows, ledger_head)`` each round, and
  :func:`~fedrec.core.privacy.ledger_chain.anchor_problems` checks that every anchored row still exists with the anchored hash.

A forger who rewrites the whole chain and the anchors is not caught by those; two more
layers are:

* signed heads: after each round's rows the server appends to the ``heads`` table (also
  append-only) an Ed25519 signature over a canonical statement ``{run_id, round, rows,
  head, final, plan_sha256, config_sha256}`` (:meth:`PrivacyLedger.sign_head`). A forger
  without the server's key cannot re-sign a rewritten chain; ``fedrec audit --verify-key``
  checks the signatures against a trusted public key;
* ``fedrec audit`` (:mod:`fedrec.core.privacy.audit`) recomputes every ε from the
  mechanism parameters and checks those against the run's plan and config
  (:mod:`fedrec.core.privacy.audit_crosscheck`).

Schema version ``"2"``; a version-``"1"`` ledger (no relation, sensitivity, heads) is
refused with a message saying so.

Modules: this one is the file (schema, :class:`PrivacyLedger`, :func:`read_ledger`,
:func:`read_heads`); the row types and their validation are in
:mod:`fedrec.core.privacy.ledger_rows`, the hash chain, anchors and head statement in
:mod:`fedrec.core.privacy.ledger_chain`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from fedrec.core.privacy.ledger_chain import (
    GENESIS,
    head_statement,
    row_hash,
    verify_chain,
)
from fedrec.core.privacy.ledger_rows import (
    ENTRY_FIELDS,
    FLOAT_FIELDS,
    HEAD_FIELDS,
    INT_FIELDS,
    ROW_FIELDS,
    TEXT_FIELDS,
    LedgerEntry,
    LedgerRow,
    SignedHead,
    check_entry,
    is_digest,
    is_int,
    is_real,
    plain_entry,
)

if TYPE_CHECKING:
    from fedrec.core.privacy.signing import LedgerSigner

LEDGER_FILE = "privacy.db"
FORMAT = "fedrec-privacy-ledger"
VERSION = "2"

_TABLE = "ledger"
# columns a version-2 file written before they existed may lack (read as their default)
_OPTIONAL = {"mechanism": "''"}
_HEADS = "heads"
_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE {_TABLE} (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    unit TEXT NOT NULL,
    mode TEXT NOT NULL,
    who TEXT NOT NULL,
    noise_multiplier REAL NOT NULL,
    sample_rate REAL NOT NULL,
    steps INTEGER NOT NULL,
    clip_norm REAL NOT NULL,
    delta REAL NOT NULL,
    accountant TEXT NOT NULL,
    epsilon REAL NOT NULL,
    budget REAL,
    relation TEXT NOT NULL,
    sensitivity REAL NOT NULL,
    release TEXT NOT NULL,
    device_signature TEXT NOT NULL,
    mechanism TEXT NOT NULL DEFAULT '',
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE {_HEADS} (
    seq INTEGER PRIMARY KEY,
    round INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    head TEXT NOT NULL,
    final INTEGER NOT NULL,
    statement TEXT NOT NULL,
    public_key TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON {_TABLE}
BEGIN SELECT RAISE(ABORT, 'privacy ledger is append-only: UPDATE refused'); END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON {_TABLE}
BEGIN SELECT RAISE(ABORT, 'privacy ledger is append-only: DELETE refused'); END;
CREATE TRIGGER heads_no_update BEFORE UPDATE ON {_HEADS}
BEGIN SELECT RAISE(ABORT, 'privacy ledger is append-only: UPDATE refused'); END;
CREATE TRIGGER heads_no_delete BEFORE DELETE ON {_HEADS}
BEGIN SELECT RAISE(ABORT, 'privacy ledger is append-only: DELETE refused'); END;
CREATE TRIGGER meta_no_update BEFORE UPDATE ON meta
BEGIN SELECT RAISE(ABORT, 'privacy ledger is append-only: UPDATE refused'); END;
CREATE TRIGGER meta_no_delete BEFORE DELETE ON meta
BEGIN SELECT RAISE(ABORT, 'privacy ledger is append-only: DELETE refused'); END;
"""


class LedgerError(ValueError):
    """The ledger file is missing, unreadable, or not a fedrec privacy ledger."""


class PrivacyLedger:
    """Append-only writer of ``privacy.db``; opens an existing ledger to continue it.

    >>> with PrivacyLedger(run_dir / LEDGER_FILE) as ledger:
    ...     head = ledger.append(entries_of_this_round)
    """

    def __init__(self, path: Path, run_id: str | None = None) -> None:
        """``run_id`` names the run in signed heads; without it, the run id of the ledger's rows."""
        self.path = Path(path)
        self.run_id = run_id
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as error:
            raise LedgerError(f"{self.path}: cannot open the privacy ledger ({error})") from error
        try:
            self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.execute("PRAGMA synchronous=FULL")
            if existed:  # continue only an intact ledger: a broken chain is evidence, not a base
                _check_schema(self._db, self.path)
                problems = verify_chain(read_ledger(self.path))
                if problems:
                    raise LedgerError(f"{self.path}: the privacy ledger's hash chain is broken, refusing to "
                                      f"append to it ({len(problems)} problems; first: {problems[0]})")
            else:
                self._create()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise LedgerError(f"{self.path}: not a readable SQLite file ({error})") from error
        except LedgerError:
            self._db.close()
            raise

    def _create(self) -> None:
        with _transaction(self._db):
            for statement in _statements(_SCHEMA):
                self._db.execute(statement)
            self._db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                                 [("format", FORMAT), ("version", VERSION)])

    def append(self, entries: Sequence[LedgerEntry]) -> str:
        """Append ``entries`` in one durable transaction; return the new head hash."""
        for entry in entries:
            check_entry(entry)
        entries = [plain_entry(entry) for entry in entries]
        with _transaction(self._db):
            count, head = self._head()
            rows = []
            for entry in entries:
                count += 1
                head_next = row_hash(head, count, entry)
                rows.append((count, *(getattr(entry, name) for name in ENTRY_FIELDS), head, head_next))
                head = head_next
            present = _columns(self._db)
            names = [name for name in ROW_FIELDS if name in present]
            if len(names) < len(ROW_FIELDS):
                if any(entry.mechanism for entry in entries):
                    raise LedgerError(f"{self.path}: this ledger predates the mechanism column; a "
                                      "user-distributed row cannot be appended to it")
                rows = [tuple(v for name, v in zip(ROW_FIELDS, row) if name in present) for row in rows]
            self._db.executemany(f"INSERT INTO {_TABLE} ({', '.join(names)}) VALUES "
                                 f"({', '.join('?' * len(names))})", rows)
        return head

    def sign_head(self, round: int, final: bool, plan_sha256: str, config_sha256: str,
                  signer: "LedgerSigner") -> None:
        """Append a signed statement of the ledger's current head, after ``round``'s rows.

        The statement (:func:`~fedrec.core.privacy.ledger_chain.head_statement`) names the run, the round, the row count and
        head hash, whether the run ended (``final``), and the sha256 of the run's
        ``privacy_plan.json`` and ``run_config.json`` (``""`` when there is none). The
        signature is Ed25519 by ``signer``; its raw public key is stored beside it.
        """
        if not is_int(round) or round < 0:
            raise ValueError(f"round must be an integer ≥ 0, got {round!r}")
        for name, digest in (("plan_sha256", plan_sha256), ("config_sha256", config_sha256)):
            if not is_digest(digest, allow_empty=True):
                raise ValueError(f"{name} must be 64 lower-case hex digits or '', got {digest!r}")
        with _transaction(self._db):
            count, head = self._head()
            run_id = self.run_id
            if run_id is None:
                ids = {row_id for (row_id,) in self._db.execute(f"SELECT DISTINCT run_id FROM {_TABLE}")}
                if len(ids) != 1:
                    raise LedgerError(f"{self.path}: cannot tell the run id to sign (rows name {sorted(ids)}); "
                                      "open the ledger with run_id=")
                run_id = ids.pop()
            statement = head_statement(run_id, int(round), count, head, bool(final), plan_sha256, config_sha256)
            self._db.execute(f"INSERT INTO {_HEADS} (round, rows, head, final, statement, public_key, signature) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (int(round), count, head, int(bool(final)), statement.decode("ascii"),
                              signer.public_key_hex(), signer.sign(statement)))

    def head(self) -> tuple[int, str]:
        """(number of rows, hash of the last row); ``(0, GENESIS)`` when empty.

        The number is the last row's ``seq``, which is the row count of an intact ledger
        (and what an anchor must name: "row n has hash h").
        """
        return self._head()

    def _head(self) -> tuple[int, str]:
        last = self._db.execute(f"SELECT seq, hash FROM {_TABLE} ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS) if last is None else (int(last[0]), str(last[1]))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class _transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _statements(script: str) -> Iterable[str]:
    """Split the schema script into statements (triggers hold ``;`` inside BEGIN…END)."""
    buffer = ""
    for line in script.strip().splitlines():
        buffer += line + "\n"
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""


def _check_schema(db: sqlite3.Connection, path: Path) -> None:
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if _TABLE not in tables or "meta" not in tables:
        raise LedgerError(f"{path}: an SQLite file, but not a fedrec privacy ledger "
                          f"(no '{_TABLE}'/'meta' table; found tables {sorted(tables)})")
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("format") != FORMAT:
        raise LedgerError(f"{path}: not a fedrec privacy ledger (meta format {meta.get('format')!r})")
    if meta.get("version") == "1":
        raise LedgerError(f"{path}: privacy ledger version '1' (written before rows stated their relation, "
                          "sensitivity and release, and before signed heads); this fedrec reads only version "
                          f"{VERSION!r}: its numbers cannot be checked against the current meaning of σ. "
                          "Audit it with the fedrec that wrote it, or rerun the experiment")
    if meta.get("version") != VERSION:
        raise LedgerError(f"{path}: privacy ledger version {meta.get('version')!r}, this fedrec reads {VERSION!r}")
    if _HEADS not in tables:
        raise LedgerError(f"{path}: privacy ledger version {VERSION} without its '{_HEADS}' table")
    for table, wanted in ((_TABLE, ROW_FIELDS), (_HEADS, HEAD_FIELDS)):
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        missing = [name for name in wanted if name not in columns and name not in _OPTIONAL]
        if missing:
            raise LedgerError(f"{path}: privacy ledger table '{table}' lacks columns {missing}")


def read_ledger(path: Path) -> list[LedgerRow]:
    """All rows of the ledger at ``path`` in ``seq`` order, read-only.

    Raises ``LedgerError`` when the file is missing, not SQLite, corrupt, not a fedrec
    ledger, or holds a value of the wrong type.
    """
    path = Path(path)

    def query(db: sqlite3.Connection) -> str:
        present = _columns(db)
        names = [name if name in present else f"{_OPTIONAL[name]} AS {name}" for name in ROW_FIELDS]
        return f"SELECT {', '.join(names)} FROM {_TABLE} ORDER BY seq"

    raw = _select(path, query)
    return [_to_row(path, values) for values in raw]


def _columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({_TABLE})")}


def _select(path: Path, query: str | Callable[[sqlite3.Connection], str]) -> list[tuple[Any, ...]]:
    if not path.is_file():
        raise LedgerError(f"{path}: no privacy ledger here (file not found)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise LedgerError(f"{path}: cannot open the privacy ledger ({error})") from error
    try:
        _check_schema(db, path)
        return db.execute(query if isinstance(query, str) else query(db)).fetchall()
    except sqlite3.DatabaseError as error:
        raise LedgerError(f"{path}: not a readable SQLite privacy ledger ({error})") from error
    finally:
        db.close()


def read_heads(path: Path) -> list[SignedHead]:
    """All signed heads of the ledger at ``path`` in the order they were appended."""
    path = Path(path)
    heads = []
    for values in _select(path, f"SELECT {', '.join(HEAD_FIELDS)} FROM {_HEADS} ORDER BY seq"):
        record = dict(zip(HEAD_FIELDS, values))
        ints = ("seq", "round", "rows", "final")
        for name, value in record.items():
            if (name in ints and not is_int(value)) or (name not in ints and not isinstance(value, str)):
                raise LedgerError(f"{path}: signed head seq={record['seq']!r}: column {name} holds {value!r}, "
                                  "of the wrong type")
        record["final"] = bool(record["final"])
        heads.append(SignedHead(**record))
    return heads


def _to_row(path: Path, values: tuple[Any, ...]) -> LedgerRow:
    record = dict(zip(ROW_FIELDS, values))
    for name, value in record.items():
        ok = (
            (name in INT_FIELDS and is_int(value))
            or (name in FLOAT_FIELDS and (is_real(value) or (name == "budget" and value is None)))
            or (name in TEXT_FIELDS and isinstance(value, str))
        )
        if not ok:
            raise LedgerError(f"{path}: row seq={record['seq']!r}: column {name} holds {value!r}, "
                              "of the wrong type")
        if name in FLOAT_FIELDS and value is not None:
            record[name] = float(value)
    return LedgerRow(**record)
