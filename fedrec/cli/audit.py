"""``fedrec audit`` (verify a run's privacy ledger) and ``fedrec ledger-key`` (the key the
server signs ledgers with)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fedrec.cli.common import fail


def audit(
    run_dir: Path = typer.Argument(..., help="a run directory holding privacy.db"),
    accountant: Optional[str] = typer.Option(None, help="independent accountant for every row: rdp or pld "
                                             "(default: rdp for rdp rows, pld for prv rows)"),
    exact: int = typer.Option(100, help="PRV/PLD histories recomputed exactly, the rest bracketed (0: all)"),
    verify_key: Optional[Path] = typer.Option(None, "--verify-key", help="the server's ledger public key "
                                              "(hex file, obtained out of band) the signed heads must verify "
                                              "with; default: the run's own ledger-signing.pub"),
    device_keys: Optional[Path] = typer.Option(None, "--device-keys", help="a directory of the devices' "
                                               "OpenSSH *.pub keys; rows a device countersigned are verified"),
) -> None:
    """Verify a run's privacy ledger, its signatures and its agreement with the run's plan and
    config, and recompute every ε with an independent accountant.

    Writes RUN_DIR/audit.json and RUN_DIR/epsilon.png; exits 1 when anything is wrong, 2
    when the run cannot be audited (no run directory or ledger, an unreadable file, a
    missing key file).
    """
    from rich.console import Console

    from fedrec.core.privacy.audit import AuditError, audit_run
    from fedrec.reporting.audit_report import print_audit, write_audit

    if exact < 0:
        fail(f"--exact must be ≥ 0 (0: every history exactly), got {exact}")
    try:
        report = audit_run(run_dir, accountant, max_exact=exact or None, verify_key=verify_key,
                           device_keys=device_keys)
    except AuditError as err:
        fail(str(err))
    except UnicodeDecodeError as err:  # a run file that is not text: the run cannot be audited (exit 2)
        fail(f"{_undecodable_file(run_dir) or run_dir}: not UTF-8 text ({err.reason}); the run cannot be audited")
    except OSError as err:
        fail(f"{err.filename or run_dir}: cannot read it ({err.strerror or err}); the run cannot be audited")
    try:
        write_audit(report, run_dir)
    except OSError as err:
        fail(f"{run_dir}: cannot write the audit's files ({err.strerror or err})")
    print_audit(report, Console())
    if not report.ok:
        raise typer.Exit(1)


def _undecodable_file(run_dir: Path) -> Path | None:
    """The first JSON or JSON-lines file of a run that is not UTF-8 text (``None``: none is)."""
    for path in sorted([*run_dir.glob("*.json*"), *run_dir.glob("*/*.json*")]):
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            return path
        except OSError:
            continue
    return None


def ledger_key(
    out: Optional[Path] = typer.Option(None, help="write the public key (hex) to this file"),
    key: Optional[Path] = typer.Option(None, help="the private key file (default: $FEDREC_HOME/ledger-signing.key, "
                                       "FEDREC_HOME defaulting to ~/.fedrec); created 0600 when missing"),
) -> None:
    """Print (or write) the public key the server signs its privacy ledgers with: hand it to
    auditors out of band, for `fedrec audit RUN --verify-key FILE`."""
    from fedrec.core.privacy.signing import (
        LedgerSigner,
        SigningError,
        default_signing_key_path,
        write_public_key,
    )

    path = key.expanduser() if key is not None else default_signing_key_path()
    try:
        signer = LedgerSigner.load_or_create(path)
        if out is not None:
            write_public_key(out.expanduser(), signer.public_key_hex())
    except (SigningError, OSError) as err:
        fail(f"{path}: {err}")
    typer.echo(signer.public_key_hex())
