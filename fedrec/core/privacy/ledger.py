"""The privacy ledger ``privacy.db``: one append-only, hash-chained row per mechanism run.

Every time a run applies a DP mechanism to some unit's data, it appends a row saying
who spent privacy (``who``: ``server`` or ``client:<id>``), on which unit (``record`` or
``user``), under which neighbouring relation (``relation``: ``add-remove`` or
``replace-one``, fixed by the mode: :data:`MODE_RELATION`), for which release (``train``
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
  someone who dropped the triggers (``verify_chain``);
* deleting the *last* rows leaves a valid shorter chain; the run's ``metrics.jsonl``
  records an anchor ``(ledger_rows, ledger_head)`` each round, and ``anchor_problems``
  checks that every anchored row still exists with the anchored hash.

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
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import sqlite3
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from fedrec.core.privacy.accounting import ACCOUNTANTS

if TYPE_CHECKING:
    from fedrec.core.privacy.signing import LedgerSigner

LEDGER_FILE = "privacy.db"
GENESIS = "0" * 64  # prev_hash of row 1; head hash of an empty ledger
# keys of the anchor each ``metrics.jsonl`` row carries: ledger size and head hash after the round
ANCHOR_ROWS = "ledger_rows"
ANCHOR_HEAD = "ledger_head"
FORMAT = "fedrec-privacy-ledger"
VERSION = "2"

UNITS = ("record", "user")
# mode -> the unit it protects
MODES = {"record": "record", "user-local": "user", "user-central": "user"}
# mode -> the neighbouring relation its guarantee is stated under
MODE_RELATION = {"record": "add-remove", "user-local": "replace-one", "user-central": "add-remove"}
RELATIONS = ("add-remove", "replace-one")
RELEASES = ("train", "evaluate")
SERVER = "server"
CLIENT_PREFIX = "client:"

_TABLE = "ledger"
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


@dataclass(frozen=True)
class LedgerEntry:
    """One mechanism run, as the caller states it.

    ``epsilon`` is ``who``'s ε at ``delta`` after this row: the composition of all of
    its rows so far on the same unit, by ``accountant`` (``inf`` when σ = 0).
    ``budget`` is ``who``'s ε budget, ``None`` when it has none.
    """

    run_id: str
    round: int
    unit: str  # "record" or "user"
    mode: str  # "record", "user-local", "user-central"
    who: str  # "server" or "client:<id>"
    noise_multiplier: float  # σ = noise std / sensitivity
    sample_rate: float  # q, Poisson inclusion probability of one unit per step
    steps: int
    clip_norm: float  # C, L2 bound on one unit's contribution
    delta: float
    accountant: str  # "rdp" or "prv"
    epsilon: float
    budget: float | None
    relation: str  # "add-remove" or "replace-one": MODE_RELATION[mode]
    sensitivity: float  # L2 sensitivity of the released quantity under ``relation``
    release: str = "train"  # "train" or "evaluate"
    device_signature: str = ""  # hex ECDSA signature of the device over release_statement, "" when none


@dataclass(frozen=True, kw_only=True)
class LedgerRow(LedgerEntry):
    """A stored entry with its place in the chain (``seq`` counts from 1)."""

    seq: int
    prev_hash: str
    hash: str

    @property
    def entry(self) -> LedgerEntry:
        return LedgerEntry(**{f.name: getattr(self, f.name) for f in fields(LedgerEntry)})


_ENTRY_FIELDS = tuple(f.name for f in fields(LedgerEntry))
_ROW_FIELDS = ("seq", *_ENTRY_FIELDS, "prev_hash", "hash")
_FLOAT_FIELDS = ("noise_multiplier", "sample_rate", "clip_norm", "delta", "epsilon", "budget", "sensitivity")
_INT_FIELDS = ("seq", "round", "steps")
_TEXT_FIELDS = ("run_id", "unit", "mode", "who", "accountant", "relation", "release", "device_signature",
                "prev_hash", "hash")


def row_hash(prev_hash: str, seq: int, entry: LedgerEntry) -> str:
    """``sha256(prev_hash ‖ canonical(seq, entry))`` as 64 hex digits."""
    payload: dict[str, Any] = {"seq": int(seq)}
    for name in _ENTRY_FIELDS:
        value = getattr(entry, name)
        if name in _FLOAT_FIELDS:
            payload[name] = None if value is None else repr(float(value))
        elif name in _INT_FIELDS:
            payload[name] = int(value)
        else:
            payload[name] = str(value)
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256((prev_hash + canonical).encode("ascii")).hexdigest()


def check_entry(entry: LedgerEntry) -> None:
    """Raise ``ValueError`` naming the field when ``entry`` makes no sense."""
    where = f"ledger entry (round {entry.round}, {entry.who!r})"

    def fail(message: str) -> None:
        raise ValueError(f"{where}: {message}")

    if not isinstance(entry.run_id, str) or not entry.run_id:
        fail(f"run_id must be a non-empty string, got {entry.run_id!r}")
    if not _is_int(entry.round) or entry.round < 0:
        fail(f"round must be an integer ≥ 0, got {entry.round!r}")
    if entry.mode not in MODES:
        fail(f"mode must be one of {tuple(MODES)}, got {entry.mode!r}")
    if entry.unit != MODES[entry.mode]:
        fail(f"mode {entry.mode!r} protects unit {MODES[entry.mode]!r}, got unit {entry.unit!r}")
    if entry.mode == "user-central" and entry.release == "train":
        if entry.who != SERVER:
            fail(f"user-central train rows are the server's: who must be {SERVER!r}, got {entry.who!r}")
    elif entry.mode == "user-central" and entry.who == SERVER:
        pass  # an evaluation release the server noises
    elif not (isinstance(entry.who, str) and entry.who.startswith(CLIENT_PREFIX)
              and len(entry.who) > len(CLIENT_PREFIX)):
        fail(f"{entry.mode} rows are a client's: who must be 'client:<id>', got {entry.who!r}")
    if entry.accountant not in ACCOUNTANTS:
        fail(f"accountant must be one of {ACCOUNTANTS}, got {entry.accountant!r}")
    if not _is_real(entry.noise_multiplier) or not (math.isfinite(entry.noise_multiplier)
                                                    and entry.noise_multiplier >= 0):
        fail(f"noise_multiplier must be finite and ≥ 0, got {entry.noise_multiplier!r}")
    if not _is_real(entry.sample_rate) or not 0 < entry.sample_rate <= 1:
        fail(f"sample_rate must be in (0, 1], got {entry.sample_rate!r}")
    if not _is_int(entry.steps) or entry.steps < 0:
        fail(f"steps must be an integer ≥ 0, got {entry.steps!r}")
    if not _is_real(entry.clip_norm) or not (math.isfinite(entry.clip_norm) and entry.clip_norm > 0):
        fail(f"clip_norm must be finite and > 0, got {entry.clip_norm!r}")
    if not _is_real(entry.delta) or not 0 < entry.delta < 1:
        fail(f"delta must be in (0, 1), got {entry.delta!r}")
    if not _is_real(entry.epsilon) or not entry.epsilon >= 0:  # inf allowed, nan refused
        fail(f"epsilon must be ≥ 0 (inf allowed), got {entry.epsilon!r}")
    if entry.budget is not None and not (_is_real(entry.budget) and math.isfinite(entry.budget)
                                         and entry.budget > 0):
        fail(f"budget must be None or finite and > 0, got {entry.budget!r}")
    if entry.mode in MODE_RELATION and entry.relation != MODE_RELATION[entry.mode]:
        fail(f"mode {entry.mode!r} is stated under relation {MODE_RELATION[entry.mode]!r}, "
             f"got relation {entry.relation!r}")
    if not _is_real(entry.sensitivity) or not (math.isfinite(entry.sensitivity) and entry.sensitivity > 0):
        fail(f"sensitivity must be finite and > 0, got {entry.sensitivity!r}")
    if entry.release not in RELEASES:
        fail(f"release must be one of {RELEASES}, got {entry.release!r}")
    if not isinstance(entry.device_signature, str) or not all(c in "0123456789abcdef"
                                                              for c in entry.device_signature):
        fail(f"device_signature must be lower-case hex or '', got {entry.device_signature!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _plain(entry: LedgerEntry) -> LedgerEntry:
    """The entry with Python ``int``/``float`` values (numpy scalars are valid input too)."""
    values = {name: getattr(entry, name) for name in _ENTRY_FIELDS}
    for name in _INT_FIELDS:
        if name in values:
            values[name] = int(values[name])
    for name in _FLOAT_FIELDS:
        if values[name] is not None:
            values[name] = float(values[name])
    return LedgerEntry(**values)


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
        entries = [_plain(entry) for entry in entries]
        with _transaction(self._db):
            count, head = self._head()
            rows = []
            for entry in entries:
                count += 1
                head_next = row_hash(head, count, entry)
                rows.append((count, *(getattr(entry, name) for name in _ENTRY_FIELDS), head, head_next))
                head = head_next
            columns = ", ".join(_ROW_FIELDS)
            marks = ", ".join("?" * len(_ROW_FIELDS))
            self._db.executemany(f"INSERT INTO {_TABLE} ({columns}) VALUES ({marks})", rows)
        return head

    def sign_head(self, round: int, final: bool, plan_sha256: str, config_sha256: str,
                  signer: "LedgerSigner") -> None:
        """Append a signed statement of the ledger's current head, after ``round``'s rows.

        The statement (:func:`head_statement`) names the run, the round, the row count and
        head hash, whether the run ended (``final``), and the sha256 of the run's
        ``privacy_plan.json`` and ``run_config.json`` (``""`` when there is none). The
        signature is Ed25519 by ``signer``; its raw public key is stored beside it.
        """
        if not _is_int(round) or round < 0:
            raise ValueError(f"round must be an integer ≥ 0, got {round!r}")
        for name, digest in (("plan_sha256", plan_sha256), ("config_sha256", config_sha256)):
            if not _is_digest(digest, allow_empty=True):
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
    for table, wanted in ((_TABLE, _ROW_FIELDS), (_HEADS, _HEAD_FIELDS)):
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        missing = [name for name in wanted if name not in columns]
        if missing:
            raise LedgerError(f"{path}: privacy ledger table '{table}' lacks columns {missing}")


def read_ledger(path: Path) -> list[LedgerRow]:
    """All rows of the ledger at ``path`` in ``seq`` order, read-only.

    Raises ``LedgerError`` when the file is missing, not SQLite, corrupt, not a fedrec
    ledger, or holds a value of the wrong type.
    """
    path = Path(path)
    raw = _select(path, f"SELECT {', '.join(_ROW_FIELDS)} FROM {_TABLE} ORDER BY seq")
    return [_to_row(path, values) for values in raw]


def _select(path: Path, query: str) -> list[tuple[Any, ...]]:
    if not path.is_file():
        raise LedgerError(f"{path}: no privacy ledger here (file not found)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise LedgerError(f"{path}: cannot open the privacy ledger ({error})") from error
    try:
        _check_schema(db, path)
        return db.execute(query).fetchall()
    except sqlite3.DatabaseError as error:
        raise LedgerError(f"{path}: not a readable SQLite privacy ledger ({error})") from error
    finally:
        db.close()


@dataclass(frozen=True)
class SignedHead:
    """One row of the ``heads`` table: a signed statement of the ledger's head after ``round``."""

    seq: int
    round: int
    rows: int
    head: str
    final: bool
    statement: str  # canonical JSON (head_statement), the signed bytes as ASCII text
    public_key: str  # raw Ed25519 public key, hex
    signature: str  # Ed25519 signature of ``statement``, hex

    def claims(self) -> dict[str, Any] | None:
        """The statement's fields, ``None`` when it is not a JSON object."""
        try:
            value = json.loads(self.statement)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


_HEAD_FIELDS = tuple(f.name for f in fields(SignedHead))


def head_statement(run_id: str, round: int, rows: int, head: str, final: bool, plan_sha256: str,
                   config_sha256: str) -> bytes:
    """The canonical bytes a head signature covers: sorted-key JSON, no spaces, ASCII."""
    payload = {"run_id": str(run_id), "round": int(round), "rows": int(rows), "head": str(head),
               "final": bool(final), "plan_sha256": str(plan_sha256), "config_sha256": str(config_sha256)}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def read_heads(path: Path) -> list[SignedHead]:
    """All signed heads of the ledger at ``path`` in the order they were appended."""
    path = Path(path)
    heads = []
    for values in _select(path, f"SELECT {', '.join(_HEAD_FIELDS)} FROM {_HEADS} ORDER BY seq"):
        record = dict(zip(_HEAD_FIELDS, values))
        ints = ("seq", "round", "rows", "final")
        for name, value in record.items():
            if (name in ints and not _is_int(value)) or (name not in ints and not isinstance(value, str)):
                raise LedgerError(f"{path}: signed head seq={record['seq']!r}: column {name} holds {value!r}, "
                                  "of the wrong type")
        record["final"] = bool(record["final"])
        heads.append(SignedHead(**record))
    return heads


def _is_digest(value: Any, allow_empty: bool = False) -> bool:
    if allow_empty and value == "":
        return True
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _to_row(path: Path, values: tuple[Any, ...]) -> LedgerRow:
    record = dict(zip(_ROW_FIELDS, values))
    for name, value in record.items():
        ok = (
            (name in _INT_FIELDS and _is_int(value))
            or (name in _FLOAT_FIELDS and (_is_real(value) or (name == "budget" and value is None)))
            or (name in _TEXT_FIELDS and isinstance(value, str))
        )
        if not ok:
            raise LedgerError(f"{path}: row seq={record['seq']!r}: column {name} holds {value!r}, "
                              "of the wrong type")
        if name in _FLOAT_FIELDS and value is not None:
            record[name] = float(value)
    return LedgerRow(**record)


def verify_chain(rows: Sequence[LedgerRow]) -> list[str]:
    """Problems with the hash chain of ``rows`` (in stored order); empty when intact.

    Checks that ``seq`` runs 1, 2, …, that each ``prev_hash`` is the previous row's hash
    (``GENESIS`` for the first) and that each hash matches the row's content.
    """
    problems: list[str] = []
    prev = GENESIS
    for position, row in enumerate(rows, start=1):
        if row.seq != position:
            problems.append(f"row {position}: seq is {row.seq}, expected {position} "
                            "(a row was deleted or inserted)")
        if row.prev_hash != prev:
            problems.append(f"row seq={row.seq}: prev_hash does not match the hash of the row "
                            "before it (a row before it was deleted, inserted or rewritten)")
        if row_hash(row.prev_hash, row.seq, row) != row.hash:
            problems.append(f"row seq={row.seq}: hash does not match its content "
                            "(the row was edited after it was written)")
        prev = row.hash
    return problems


def anchor_problems(rows: Sequence[LedgerRow], anchors: Sequence[tuple[int, str]]) -> list[str]:
    """Problems with anchors ``(n, h)``: each says "the ledger had n rows, the last hashed h".

    Catches rows deleted from the end, which the chain alone cannot. An anchor with
    ``n = 0`` must carry ``GENESIS``.
    """
    by_seq = {row.seq: row for row in rows}
    problems: list[str] = []
    for count, head in anchors:
        if count == 0:
            if head != GENESIS:
                problems.append(f"anchor (0 rows) has hash {head[:12]}…, expected the genesis hash")
        elif count not in by_seq:
            problems.append(f"anchor says the ledger had {count} rows but row {count} is missing "
                            f"(ledger has {len(rows)} rows: rows were deleted)")
        elif by_seq[count].hash != head:
            problems.append(f"anchor at row {count}: ledger hash {by_seq[count].hash[:12]}… differs from "
                            f"the anchored {head[:12]}… (the ledger was rewritten)")
    return problems


def unanchored_rows(rows: Sequence[LedgerRow], anchors: Sequence[tuple[int, str]]) -> int:
    """Rows after the last anchor: allowed (a crash between ledger and metrics write), noted."""
    last = max((count for count, _ in anchors), default=0)
    return max(0, len(rows) - last)


def anchor(head: tuple[int, str]) -> dict[str, int | str]:
    """The anchor fields of a ``metrics.jsonl`` row, from ``PrivacyLedger.head()``."""
    count, digest = head
    return {ANCHOR_ROWS: count, ANCHOR_HEAD: digest}
