"""Fixtures shared by the round driver's ledger tests: write entries to a ledger, audit rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import pytest


@pytest.fixture
def write_ledger() -> Callable[[Path, Sequence[Any]], list]:
    """``write(folder, entries)``: the entries appended to a fresh ledger in ``folder``, read back as rows."""
    from fedrec.core.privacy.ledger import LEDGER_FILE, PrivacyLedger, read_ledger

    def write(folder: Path, entries: Sequence[Any]) -> list:
        path = folder / LEDGER_FILE
        with PrivacyLedger(path, run_id="driver-0") as ledger:
            ledger.append(list(entries))
        return read_ledger(path)

    return write


@pytest.fixture
def audit_rows() -> Callable[[Sequence[Any]], tuple[Any, list]]:
    """``audit(rows)``: ``fedrec audit``'s ε check over the rows (its findings, its per-who audits)."""
    from fedrec.core.privacy.audit_accounting import DEFAULT_TOLERANCE
    from fedrec.core.privacy.audit_epsilon import EpsilonCheck

    def audit(rows: Sequence[Any]) -> tuple[Any, list]:
        check = EpsilonCheck(None, DEFAULT_TOLERANCE, None)
        whos = check.run(rows)
        check.pld_finals(whos, rows)
        return check, whos

    return audit
