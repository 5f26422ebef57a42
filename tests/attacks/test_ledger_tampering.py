"""Tampering with a run's privacy ledger, as an adversarial review did it: every way is caught.

The review found that a forger with write access to the run directory could rewrite the
whole ledger with milder parameters, recompute every ε consistently with them, re-hash
the chain and re-anchor ``metrics.jsonl``, and pass ``fedrec audit`` (which then only
checked self-consistency). Here the forger does all of that and more — re-signs every
head with a key of their own and replaces the run's ``ledger-signing.pub`` with it —
and each test asserts the specific check that catches them. Each assertion names, in a
comment, the check whose removal would make it fail.

The runs are fabricated with the real ledger, signer and accountant
(``tests/core/privacy/test_audit.py``'s ``fabricate_run``), each in well under a second.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "privacy"))
from test_audit import Fabricated, fabricate_run  # noqa: E402  (the shared run fabricator)

from fedrec.cli.main import app  # noqa: E402
from fedrec.core.privacy.accounting import epsilon  # noqa: E402
from fedrec.core.privacy.audit import AuditError, audit_run  # noqa: E402
from fedrec.core.privacy.audit_crosscheck import CONFIG_FILE, PLAN_FILE  # noqa: E402
from fedrec.core.privacy.ledger import LEDGER_FILE, PrivacyLedger, read_ledger  # noqa: E402
from fedrec.core.privacy.ledger_chain import anchor  # noqa: E402
from fedrec.core.privacy.ledger_rows import LedgerEntry  # noqa: E402
from fedrec.core.privacy.signing import PUBLIC_KEY_FILE, LedgerSigner, write_public_key  # noqa: E402
from fedrec.core.run_files import METRICS_FILE, SUMMARY_FILE  # noqa: E402

runner = CliRunner()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def full_rewrite(made: Fabricated, change: Callable[[LedgerEntry], LedgerEntry | None]) -> LedgerSigner:
    """The strongest forger without the server's key: a new ledger from the changed rows
    (``None`` drops a row) with every ε recomputed by the real accountant, every head
    re-signed with the forger's own key (final on the last round), ``metrics.jsonl``
    re-anchored and ``ledger-signing.pub`` replaced. Returns the forger's signer."""
    run = made.run_dir
    rows = read_ledger(run / LEDGER_FILE)
    histories: dict[str, list] = defaultdict(list)
    forged: list[LedgerEntry] = []
    for row in rows:
        entry = change(row.entry)
        if entry is None:
            continue
        histories[entry.who].append((entry.noise_multiplier, entry.sample_rate, entry.steps))
        forged.append(dataclasses.replace(entry, epsilon=epsilon(histories[entry.who], entry.delta,
                                                                 entry.accountant)))
    attacker = LedgerSigner.generate()
    (run / LEDGER_FILE).unlink()
    lines = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
    last = lines[-1]["round"]
    with PrivacyLedger(run / LEDGER_FILE, run_id=rows[0].run_id) as ledger:
        for line in lines:
            ledger.append([e for e in forged if e.round == line["round"]])
            ledger.sign_head(line["round"], line["round"] == last and (run / SUMMARY_FILE).exists(),
                             sha256(run / PLAN_FILE), sha256(run / CONFIG_FILE), attacker)
            line.update(anchor(ledger.head()))
    (run / METRICS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    write_public_key(run / PUBLIC_KEY_FILE, attacker.public_key_hex())
    return attacker


def self_consistent(report) -> None:
    """The forger's rewrite holds up on its own terms: chain, anchors, own signatures, every ε."""
    assert report.chain_ok and report.anchors_ok
    assert report.signature_problems == []  # verified against the forger's own ledger-signing.pub
    assert not report.mismatches and not report.overshoots


def trusted_key_catches(made: Fabricated, round_: int = 1) -> None:
    """With the server's real public key the forger's signatures fail, naming the round."""
    report = audit_run(made.run_dir, verify_key=made.trusted_key)
    # the signature check of audit_signatures.SignedHeads (verify_ed25519 against the trusted key)
    assert any(f"(round {round_})" in p and "does not verify with the trusted key" in p
               for p in report.signature_problems), report.signature_problems
    assert not report.ok


@pytest.fixture
def central(tmp_path: Path) -> Fabricated:
    made = fabricate_run(tmp_path / "run", "user-central", rounds=3)
    assert audit_run(made.run_dir, verify_key=made.trusted_key).ok
    return made


@pytest.fixture
def record(tmp_path: Path) -> Fabricated:
    made = fabricate_run(tmp_path / "run", "record", rounds=3)
    assert audit_run(made.run_dir, verify_key=made.trusted_key).ok
    return made


def train_only(change: Callable[[LedgerEntry], LedgerEntry | None]) -> Callable[[LedgerEntry], LedgerEntry | None]:
    return lambda e: change(e) if e.release == "train" else e


# --- (1) σ×3, ε recomputed, chain re-hashed, metrics re-anchored, heads re-signed --------------

@pytest.mark.parametrize("mode", ["user-central", "record"])
def test_1_sigma_times_three_full_rewrite(tmp_path: Path, mode: str) -> None:
    made = fabricate_run(tmp_path / "run", mode, rounds=3)
    honest = max(w.final_epsilon for w in audit_run(made.run_dir).whos)
    full_rewrite(made, train_only(lambda e: dataclasses.replace(e, noise_multiplier=3 * e.noise_multiplier)))
    report = audit_run(made.run_dir)
    self_consistent(report)
    assert max(w.final_epsilon for w in report.whos) < honest / 2  # the forgery claims far less privacy spent
    # the plan cross-check (audit_crosscheck._check_rows, differ("noise_multiplier", …))
    assert any("noise_multiplier=3.3" in p and "the plan says 1.1" in p for p in report.crosscheck_problems)
    assert any("signatures verified against the run's own" in n for n in report.notes)
    assert not report.ok
    trusted_key_catches(made)


def test_1b_the_forger_also_edits_the_plan_so_the_recompute_from_the_config_catches_it(central: Fabricated) -> None:
    run = central.run_dir
    plan = json.loads((run / PLAN_FILE).read_text())
    plan["train"]["noise_multiplier"] *= 3
    (run / PLAN_FILE).write_text(json.dumps(plan, sort_keys=True))
    full_rewrite(central, train_only(lambda e: dataclasses.replace(e, noise_multiplier=3 * e.noise_multiplier)))
    report = audit_run(run)
    self_consistent(report)
    # the plan recomputed from run_config.json (audit_crosscheck._check_config → recompute_plan)
    assert any("train.noise_multiplier=3.3" in p and "recomputed from run_config.json" in p
               for p in report.crosscheck_problems), report.crosscheck_problems
    trusted_key_catches(central)


def test_1c_the_cli_with_verify_key_exits_1_naming_the_round(central: Fabricated) -> None:
    full_rewrite(central, train_only(lambda e: dataclasses.replace(e, noise_multiplier=3 * e.noise_multiplier)))
    result = runner.invoke(app, ["audit", str(central.run_dir), "--verify-key", str(central.trusted_key)])
    assert result.exit_code == 1, result.output
    # the trusted-key signature check, as printed by audit_report.print_audit
    assert "(round 1)" in " ".join(result.output.split()) and "trusted key" in result.output


# --- (2) q/10 -------------------------------------------------------------------------------

def test_2_sample_rate_divided_by_ten(central: Fabricated) -> None:
    full_rewrite(central, train_only(lambda e: dataclasses.replace(e, sample_rate=e.sample_rate / 10)))
    report = audit_run(central.run_dir)
    self_consistent(report)
    # audit_crosscheck._check_rows: differ("sample_rate", …)
    assert any("sample_rate=0.02" in p and "the plan says 0.2" in p for p in report.crosscheck_problems)
    trusted_key_catches(central)


# --- (3) δ = 1e-2 ---------------------------------------------------------------------------

def test_3_delta_raised_to_one_percent(central: Fabricated) -> None:
    full_rewrite(central, lambda e: dataclasses.replace(e, delta=1e-2))
    report = audit_run(central.run_dir)
    self_consistent(report)
    # audit_crosscheck._check_delta: the row's δ against the plan's, and against 1/n_units
    assert any("δ=0.01 but privacy_plan.json says δ=1e-05" in p for p in report.crosscheck_problems)
    assert any("δ=0.01 is not below 1/n_units" in p for p in report.crosscheck_problems)
    trusted_key_catches(central)


# --- (4) round 1's row dropped ----------------------------------------------------------------

def test_4_round_one_row_dropped(central: Fabricated) -> None:
    full_rewrite(central, lambda e: None if (e.round == 1 and e.release == "train") else e)
    report = audit_run(central.run_dir)
    self_consistent(report)
    # audit_crosscheck._check_rounds: exactly one server train row per completed user-central round
    assert any(p.startswith("round 1: 0 server train rows") for p in report.crosscheck_problems)
    trusted_key_catches(central, round_=2)  # round 1 has no rows left, its head is the forger's too


# --- (5) budget removed -----------------------------------------------------------------------

def test_5_budget_removed(record: Fabricated) -> None:
    full_rewrite(record, lambda e: dataclasses.replace(e, budget=None))
    report = audit_run(record.run_dir)
    self_consistent(report)
    # audit_crosscheck._check_rows: differ("budget", …)
    assert any("budget=None but the plan says 50.0" in p for p in report.crosscheck_problems)
    trusted_key_catches(record)


# --- (6) the newest row deleted together with its metrics line ---------------------------------

def delete_newest(made: Fabricated, heads_too: bool) -> None:
    """Without the key: drop the triggers, delete the newest row (and the round's signed head),
    and cut the last line off metrics.jsonl."""
    db = sqlite3.connect(made.run_dir / LEDGER_FILE)
    db.execute("DROP TRIGGER ledger_no_delete")
    db.execute("DELETE FROM ledger WHERE seq = (SELECT MAX(seq) FROM ledger)")
    if heads_too:
        db.execute("DROP TRIGGER heads_no_delete")
        db.execute("DELETE FROM heads WHERE seq = (SELECT MAX(seq) FROM heads)")
    db.commit()
    db.close()
    lines = (made.run_dir / METRICS_FILE).read_text().splitlines(keepends=True)
    (made.run_dir / METRICS_FILE).write_text("".join(lines[:-1]))


def test_6_newest_row_and_its_metrics_line_deleted(central: Fabricated) -> None:
    rows = len(read_ledger(central.run_dir / LEDGER_FILE))
    delete_newest(central, heads_too=False)
    report = audit_run(central.run_dir)
    assert report.chain_ok and report.anchors_ok  # what the old audit saw: nothing wrong
    # audit_signatures.SignedHeads: a signed head's row count against the ledger
    assert any(f"says the ledger had {rows} rows, it has {rows - 1}" in p for p in report.signature_problems)
    # audit_signatures.SignedHeads: the last signed head of a finished run covers every row
    assert any(f"the last signed head covers {rows} rows, the ledger has {rows - 1}" in p
               for p in report.signature_problems)
    assert not report.ok


def test_6b_and_the_rounds_signed_head_deleted_too(central: Fabricated) -> None:
    delete_newest(central, heads_too=True)
    report = audit_run(central.run_dir)
    assert report.chain_ok and report.anchors_ok
    # audit_signatures.SignedHeads: a finished run (summary.json) must end with a final head
    assert any("the last signed head is not final although summary.json" in p for p in report.signature_problems)
    # audit_crosscheck._check_rounds: summary's rounds against the last completed round
    assert any(p.startswith(f"{SUMMARY_FILE}: rounds=3 but the last round") for p in report.crosscheck_problems)


def test_6c_and_re_signed_with_the_forgers_key(central: Fabricated) -> None:
    lines = (central.run_dir / METRICS_FILE).read_text().splitlines(keepends=True)
    (central.run_dir / METRICS_FILE).write_text("".join(lines[:-1]))
    full_rewrite(central, lambda e: None if e.round == 3 else e)
    report = audit_run(central.run_dir)
    assert report.signature_problems == []  # self-consistent signatures, yet:
    # audit_crosscheck._check_rounds: summary says 3 rounds, metrics end at 2
    assert any(p.startswith(f"{SUMMARY_FILE}: rounds=3 but the last round") for p in report.crosscheck_problems)
    trusted_key_catches(central)


# --- (7) a ledger copied from another run ------------------------------------------------------

def test_7_ledger_copied_from_another_run(tmp_path: Path) -> None:
    server = LedgerSigner.generate()  # the same server ran both: its signatures verify on both
    made = fabricate_run(tmp_path / "a", "user-central", run_id="run-A", signer=server)
    other = fabricate_run(tmp_path / "b", "user-central", run_id="run-B", signer=server,
                          noise_multiplier=3.3)  # the other run had more noise: a smaller ε
    shutil.copy(other.run_dir / LEDGER_FILE, made.run_dir / LEDGER_FILE)
    shutil.copy(other.run_dir / METRICS_FILE, made.run_dir / METRICS_FILE)  # anchors to match
    report = audit_run(made.run_dir, verify_key=made.trusted_key)
    assert report.chain_ok and report.anchors_ok and not report.mismatches
    # audit_crosscheck._check_rows: the row's run id against the plan's
    assert any("run id 'run-B' but privacy_plan.json names run 'run-A'" in p for p in report.crosscheck_problems)
    # audit_signatures.SignedHeads: the signed plan_sha256 against this run's privacy_plan.json
    assert any("(round 1)" in p and "signed plan_sha256" in p for p in report.signature_problems)
    assert not report.ok


def test_7b_rows_of_two_runs_mixed(central: Fabricated) -> None:
    full_rewrite(central, lambda e: dataclasses.replace(e, run_id="run-B") if e.round == 2 else e)
    report = audit_run(central.run_dir)
    # audit_signatures.SignedHeads: one ledger, one run
    assert any("rows name 2 runs" in p for p in report.signature_problems)


# --- bad input: exit 1 for findings, 2 for what cannot be audited -----------------------------

def test_a_mismatching_verify_key_exits_1(central: Fabricated, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pub"
    write_public_key(wrong, LedgerSigner.generate().public_key_hex())
    result = runner.invoke(app, ["audit", str(central.run_dir), "--verify-key", str(wrong)])
    assert result.exit_code == 1 and "round 1" in result.output


def test_missing_signatures_fail(central: Fabricated) -> None:
    db = sqlite3.connect(central.run_dir / LEDGER_FILE)
    db.execute("DROP TRIGGER heads_no_delete")
    db.execute("DELETE FROM heads")
    db.commit()
    db.close()
    report = audit_run(central.run_dir)
    assert any(p.startswith("missing signature") for p in report.signature_problems) and not report.ok
    result = runner.invoke(app, ["audit", str(central.run_dir)])
    assert result.exit_code == 1 and "missing signature" in result.output


def test_missing_key_file_and_unreadable_run_dir_exit_2(central: Fabricated, tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", str(central.run_dir), "--verify-key", str(tmp_path / "nope.pub")])
    assert result.exit_code == 2 and "no such public key file" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["audit", str(tmp_path / "no-run")])
    assert result.exit_code == 2 and "no such run directory" in result.output
    result = runner.invoke(app, ["audit", str(central.run_dir), "--device-keys", str(tmp_path / "none")])
    assert result.exit_code == 2 and "--device-keys" in result.output
    with pytest.raises(AuditError, match="no such public key file"):
        audit_run(central.run_dir, verify_key=tmp_path / "nope.pub")


def test_device_signatures_are_verified_with_the_device_keys(tmp_path: Path) -> None:
    from fedrec.core.privacy.signing import release_statement, sign_release
    from fedrec.runtime.certs import add_client, init_certs

    certs = init_certs(tmp_path / "certs", ["localhost"])
    device = add_client("phone", tmp_path / "certs")
    add_client("tablet", tmp_path / "certs")
    made = fabricate_run(tmp_path / "run", "user-local", rounds=2)

    def countersign(entry: LedgerEntry) -> LedgerEntry:
        statement = release_statement(entry.run_id, entry.round, entry.who, entry.relation, entry.noise_multiplier,
                                      entry.sample_rate, entry.steps, entry.epsilon, entry.release)
        return dataclasses.replace(entry, device_signature=sign_release(device.private_key, statement))

    # the server wrote the device's countersignature with each row (ε unchanged: the real key signs)
    rows = [r.entry for r in read_ledger(made.run_dir / LEDGER_FILE)]
    signed = [countersign(e) for e in rows]
    (made.run_dir / LEDGER_FILE).unlink()
    lines = [json.loads(line) for line in (made.run_dir / METRICS_FILE).read_text().splitlines()]
    with PrivacyLedger(made.run_dir / LEDGER_FILE, run_id="run-A") as ledger:
        for line in lines:
            ledger.append([e for e in signed if e.round == line["round"]])
            ledger.sign_head(line["round"], line["round"] == 2, sha256(made.run_dir / PLAN_FILE),
                             sha256(made.run_dir / CONFIG_FILE), made.signer)
            line.update(anchor(ledger.head()))
    (made.run_dir / METRICS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = audit_run(made.run_dir, verify_key=made.trusted_key, device_keys=certs.supernodes_dir)
    assert report.ok and report.device_signatures_checked == len(rows), report.problems()
    assert any("not verified (pass --device-keys)" in n for n in audit_run(made.run_dir).notes)
    # the forger (holding the server's key, not the device's) claims 3× the noise in one row and re-signs the heads
    forged = dict(enumerate(signed))
    forged[0] = dataclasses.replace(forged[0], noise_multiplier=forged[0].noise_multiplier * 3)
    (made.run_dir / LEDGER_FILE).unlink()
    with PrivacyLedger(made.run_dir / LEDGER_FILE, run_id="run-A") as ledger:
        for line in lines:
            ledger.append([e for e in forged.values() if e.round == line["round"]])
            ledger.sign_head(line["round"], line["round"] == 2, sha256(made.run_dir / PLAN_FILE),
                             sha256(made.run_dir / CONFIG_FILE), made.signer)
            line.update(anchor(ledger.head()))
    (made.run_dir / METRICS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = audit_run(made.run_dir, verify_key=made.trusted_key, device_keys=certs.supernodes_dir)
    # audit_signatures.check_device_signatures
    assert len(report.device_problems) == 1
    assert report.device_problems[0].startswith("row seq=1 (round 1, client:1): its device signature verifies")
    assert not report.ok
