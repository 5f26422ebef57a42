"""The privacy ledger's hash chain, its anchors and the signed-head statement.

Row ``k`` carries ``hash_k = sha256(hash_{k-1} ‖ canonical(seq_k, entry_k))`` with
``hash_0 = GENESIS``, where ``canonical`` is JSON with sorted keys, no spaces, ASCII,
floats written as ``repr`` (exact, ``inf`` included) and ints as ints: editing any field
of any row, or deleting or reordering a row before the last, breaks the chain
(:func:`verify_chain`). An anchor ``(n, h)`` — "the ledger had ``n`` rows, the last hashed
``h``" — is written into ``metrics.jsonl`` each round; :func:`anchor_problems` catches the
newest rows deleted, which leaves a valid shorter chain. A head signature covers
:func:`head_statement`, the same canonical JSON of ``{run_id, round, rows, head, final,
plan_sha256, config_sha256}``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

from fedrec.core.privacy.ledger_rows import (
    ENTRY_FIELDS,
    FLOAT_FIELDS,
    INT_FIELDS,
    LedgerEntry,
    LedgerRow,
)

GENESIS = "0" * 64  # prev_hash of row 1; head hash of an empty ledger
# keys of the anchor each ``metrics.jsonl`` row carries: ledger size and head hash after the round
ANCHOR_ROWS = "ledger_rows"
ANCHOR_HEAD = "ledger_head"


def row_hash(prev_hash: str, seq: int, entry: LedgerEntry) -> str:
    """``sha256(prev_hash ‖ canonical(seq, entry))`` as 64 hex digits."""
    payload: dict[str, Any] = {"seq": int(seq)}
    for name in ENTRY_FIELDS:
        value = getattr(entry, name)
        if name == "mechanism" and value == "":  # rows without one hash as before the field existed
            continue
        if name in FLOAT_FIELDS:
            payload[name] = None if value is None else repr(float(value))
        elif name in INT_FIELDS:
            payload[name] = int(value)
        else:
            payload[name] = str(value)
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256((prev_hash + canonical).encode("ascii")).hexdigest()


def head_statement(run_id: str, round: int, rows: int, head: str, final: bool, plan_sha256: str,
                   config_sha256: str) -> bytes:
    """The canonical bytes a head signature covers: sorted-key JSON, no spaces, ASCII."""
    payload = {"run_id": str(run_id), "round": int(round), "rows": int(rows), "head": str(head),
               "final": bool(final), "plan_sha256": str(plan_sha256), "config_sha256": str(config_sha256)}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


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
