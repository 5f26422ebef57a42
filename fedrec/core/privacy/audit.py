"""``fedrec audit RUN_DIR``: check a run's privacy ledger and re-derive every ε in it.

Modules: this one runs the audit (:func:`audit_run`);
:mod:`fedrec.core.privacy.audit_signatures` checks the signed heads and the devices'
countersignatures (items 2 and 3 below); :mod:`fedrec.core.privacy.audit_crosscheck`
checks the ledger against the run's plan, config, summary and checkpoint (item 4);
:mod:`fedrec.core.privacy.audit_epsilon` recomputes every ε and checks the budgets
(items 5–8) with the accountants and tolerances of
:mod:`fedrec.core.privacy.audit_accounting`; :mod:`fedrec.core.privacy.audit_result`
holds the report, :mod:`fedrec.core.privacy.audit_json` writes ``audit.json``, and
:mod:`fedrec.reporting.audit_report` draws ``epsilon.png`` and prints the console table.

What is checked
---------------
1. The ledger's hash chain, and the anchors ``(ledger_rows, ledger_head)`` the server
   wrote into ``metrics.jsonl`` each round (:mod:`fedrec.core.privacy.ledger`).
2. Signed heads (:meth:`fedrec.core.privacy.ledger.PrivacyLedger.sign_head`): every
   round with ledger rows or an anchor has a signed head; each head's statement is
   canonical, names this ledger's run id, and its ``(rows, head)`` match the ledger at
   that point (and the round's anchor); the signature verifies — against the trusted
   public key given as ``verify_key`` (``--verify-key``), else against the run's own
   ``ledger-signing.pub`` (a note says this proves self-consistency only: a forger can
   replace that file), else against the key stored beside each head (the same
   caveat); every head must carry that key. The statement's ``plan_sha256`` must be the
   sha256 of the run's ``privacy_plan.json``, and the last head's ``config_sha256`` that
   of ``run_config.json`` (``""`` when absent; earlier heads may name an earlier
   ``run_config.json``, which a resume rewrites: a note). When ``summary.json`` exists (the run
   finished) the last head must be ``final`` and cover every row: this catches the
   newest rows deleted together with their metrics line. A ledger with rows and no
   signed head fails ("missing signature").
3. Device countersignatures: with ``device_keys`` (``--device-keys DIR``), every row with
   a ``device_signature`` must verify — ECDSA over
   :func:`fedrec.core.privacy.signing.release_statement` of the row, with ``who_user``
   the row's ``who`` — with one of the OpenSSH public keys ``DIR/*.pub``.
4. Cross-checks against the run's files (:mod:`fedrec.core.privacy.audit_crosscheck`).
5. Every row's parameters are valid (as ``PrivacyLedger.append`` demands).
6. Rows are grouped by ``(who, unit)`` in ``seq`` order; the ε after row ``k`` is the
   composition of the group's rows ``1..k``, each the Poisson-subsampled Gaussian
   ``(σ, q, steps)`` (``q = 1``: the plain Gaussian), at the row's δ (σ is noise std /
   sensitivity under the row's relation, so add/remove accounting applies to both
   relations). It is recomputed twice:

   * with the row's own Opacus accountant, :func:`fedrec.core.privacy.accounting.epsilon`
     — this must give the recorded ε to ``opacus_rel`` = 1e-6 relative; a miss means
     the recorded ε, its parameters, or the ledger's rows were altered, or the who's
     accountant saw mechanism runs that are not in the ledger;
   * independently of the training path, with Google's ``dp_accounting`` (0.6):
     ``RdpAccountant`` for ``rdp`` rows, the PLD accountant for ``prv`` rows
     (``accountant=`` forces ``rdp`` or ``pld`` for all rows). The DpEvent of a row is
     ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), steps)``,
     ``GaussianDpEvent(σ)`` when ``q = 1``.

7. Budget: a row overshoots when its recorded or Opacus ε exceeds the budget by more
   than 1e-9 relative (the server's own refusal rule), or when even the most lenient
   reading of the independent ε (its lower tolerance edge) does.
8. PLD ε of each who's whole history (dp_accounting's PLD accountant, add/remove on the
   rows' ``(σ, q, steps)``), reported beside the recorded (RDP) final ε as the tighter
   figure (``pld_epsilon``; for at most ``max_exact`` distinct histories, the highest
   ε first).

Which rows are recomputed exactly and which are bracketed: :mod:`~fedrec.core.privacy.audit_epsilon`.
The tolerances (:data:`~fedrec.core.privacy.audit_accounting.DEFAULT_TOLERANCE`) and the
measurements behind them (accountant disagreement, cost per history): ``docs/audit.md``.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from fedrec.core.privacy.audit_accounting import (
    DEFAULT_TOLERANCE,
    Tolerance,
    quiet_absl,
)
from fedrec.core.privacy.audit_crosscheck import (
    CrossCheckError,
    crosscheck,
    read_run_files,
)
from fedrec.core.privacy.audit_epsilon import EpsilonCheck
from fedrec.core.privacy.audit_result import AuditReport
from fedrec.core.privacy.audit_signatures import (
    KeyFileError,
    SignedHeads,
    check_device_signatures,
    device_public_keys,
    trusted_key,
)
from fedrec.core.privacy.ledger import LEDGER_FILE, LedgerError, read_heads, read_ledger
from fedrec.core.privacy.ledger_chain import (
    ANCHOR_HEAD,
    ANCHOR_ROWS,
    anchor_problems,
    unanchored_rows,
    verify_chain,
)
from fedrec.core.run_files import METRICS_FILE

INDEPENDENT = ("rdp", "pld")
DEFAULT_MAX_EXACT = 100


class AuditError(ValueError):
    """The run cannot be audited (no run directory, no ledger, unreadable files)."""


def audit_run(run_dir: Path, accountant: str | None = None, tolerance: Tolerance = DEFAULT_TOLERANCE,
              max_exact: int | None = DEFAULT_MAX_EXACT, verify_key: Path | None = None,
              device_keys: Path | None = None) -> AuditReport:
    """Audit the ledger of the run in ``run_dir`` (see the module docstring).

    ``accountant``: ``rdp`` or ``pld`` forces the independent accountant for all rows.
    ``max_exact``: distinct histories computed with PRV/PLD; ``None`` for all of them.
    ``verify_key``: a trusted ledger public key file (hex, as ``signing.write_public_key``
    writes it). ``device_keys``: a directory of the devices' OpenSSH ``*.pub`` keys.
    Raises ``AuditError`` when the run cannot be audited (no run directory, no ledger,
    unreadable files, a missing or malformed key file).
    """
    started = time.perf_counter()
    if accountant is not None and accountant not in INDEPENDENT:
        raise AuditError(f"unknown independent accountant {accountant!r}: choose one of {INDEPENDENT}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AuditError(f"{run_dir}: no such run directory")
    if not os.access(run_dir, os.R_OK | os.X_OK):
        raise AuditError(f"{run_dir}: the run directory is not readable")
    try:
        trusted = trusted_key(verify_key)
        devices = device_public_keys(device_keys)
    except KeyFileError as error:
        raise AuditError(str(error)) from error
    ledger_path = run_dir / LEDGER_FILE
    if not ledger_path.is_file():
        raise AuditError(f"{run_dir}: this run has no privacy ledger ({LEDGER_FILE} not found): "
                         "was it run with --dp off?")
    try:
        rows = read_ledger(ledger_path)
        heads = read_heads(ledger_path)
    except LedgerError as error:
        raise AuditError(str(error)) from error
    notes: list[str] = []
    metrics, anchors = _read_metrics(run_dir / METRICS_FILE, notes)
    anchor_issues = anchor_problems(rows, [a for a in anchors if isinstance(a, tuple)])
    anchor_issues += [a for a in anchors if isinstance(a, str)]
    valid_anchors = [a for a in anchors if isinstance(a, tuple)]
    if valid_anchors:
        tail = unanchored_rows(rows, valid_anchors)
        if tail:
            notes.append(f"{tail} row(s) after the last anchor: allowed (a crash between the ledger "
                         "and the metrics write), but their deletion would not be detected")
    elif rows:  # a run that spent privacy and anchored none of it: rows may have been cut off the end
        anchor_issues.append(f"{len(rows)} ledger rows but no anchor in {METRICS_FILE} (missing, or its "
                             "ledger_rows/ledger_head keys were removed): deleted newest rows could not be "
                             "detected (a run that crashed before its first round is logged also ends here)")
    if not rows:
        notes.append("the ledger is empty")

    try:
        files = read_run_files(run_dir, metrics)
    except CrossCheckError as error:
        raise AuditError(str(error)) from error
    signatures = SignedHeads(run_dir, rows, heads, metrics, files.finished, trusted)
    try:
        signature_issues = signatures.check(notes)
    except KeyFileError as error:
        raise AuditError(str(error)) from error
    device_issues, device_checked = check_device_signatures(rows, devices, device_keys, notes)
    cross_issues, cross_notes = crosscheck(files, rows)
    notes += cross_notes

    check = EpsilonCheck(accountant, tolerance, max_exact)
    with quiet_absl():
        whos = check.run(rows)
        check.pld_finals(whos, rows)
    findings = check.findings
    per_who: dict[str, int] = defaultdict(int)
    for finding in findings:
        per_who[finding.who] += 1
    for who in whos:
        who.findings = per_who[who.who]
    return AuditReport(
        run_dir=run_dir, rows=len(rows), chain_problems=verify_chain(rows), anchor_problems=anchor_issues,
        anchors=len(valid_anchors), notes=notes, whos=whos,
        mismatches=[f for f in findings if f.kind != "overshoot"],
        overshoots=[f for f in findings if f.kind == "overshoot"],
        forced_accountant=accountant, tolerance=tolerance, max_exact=max_exact,
        rows_opacus_checked=check.opacus_checked, rows_independent_checked=check.independent_checked,
        rows_bracketed=check.bracketed, seconds=time.perf_counter() - started,
        signature_problems=signature_issues, device_problems=device_issues, crosscheck_problems=cross_issues,
        heads=len(heads), key_source=signatures.key_source, device_signatures_checked=device_checked)


def _read_metrics(path: Path, notes: list[str]) -> tuple[list[dict[str, Any]], list[tuple[int, str] | str]]:
    """``metrics.jsonl``'s lines, and its anchors ``(rows, head)`` with a message for each malformed one."""
    if not path.exists():
        notes.append(f"no {METRICS_FILE}: no anchors, deletion of the newest rows cannot be detected")
        return [], []
    lines: list[dict[str, Any]] = []
    anchors: list[tuple[int, str] | str] = []
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as error:
        raise AuditError(f"{path}: cannot read it ({error.strerror})") from error
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise AuditError(f"{path} line {number}: not JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise AuditError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
            lines.append(row)
            if ANCHOR_ROWS not in row and ANCHOR_HEAD not in row:
                continue
            count, head = row.get(ANCHOR_ROWS), row.get(ANCHOR_HEAD)
            if (isinstance(count, int) and not isinstance(count, bool) and count >= 0 and isinstance(head, str)
                    and len(head) == 64):
                anchors.append((count, head))
            else:
                anchors.append(f"{path.name} line {number}: malformed anchor "
                               f"({ANCHOR_ROWS}={count!r}, {ANCHOR_HEAD}={head!r})")
    return lines, anchors
