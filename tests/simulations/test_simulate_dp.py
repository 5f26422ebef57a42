"""End-to-end DP: `fedrec simulate --dp …` then `fedrec audit` on the run directory."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedrec.cli import app
from fedrec.core.report import METRICS_FILE, read_jsonl

pytestmark = pytest.mark.slow


def _simulate(out: Path, *dp_args: str) -> None:
    result = CliRunner().invoke(app, ["simulate", "--dataset", "synthetic", "--model", "mf", "--rounds", "3",
                                      "--clients-per-round", "10", "--dim", "8", "--eval-every", "3",
                                      "--eval-fraction", "0.1", "--quiet", "--out", str(out), *dp_args])
    assert result.exit_code == 0, result.output


def test_record_level_run_passes_the_audit_and_tampering_fails_it(tmp_path: Path,
                                                                 no_leftover_processes: None) -> None:
    out = tmp_path / "record"
    _simulate(out, "--dp", "record", "--epsilon", "8")
    rows = read_jsonl(out / METRICS_FILE)
    assert [r["ledger_rows"] for r in rows] == [10, 20, 30]  # one row per client per round
    assert all(0 < r["epsilon_max"] <= 8 for r in rows) and all(r["dp_refused"] == 0 for r in rows)
    audited = CliRunner().invoke(app, ["audit", str(out)])
    assert audited.exit_code == 0, audited.output
    report = json.loads((out / "audit.json").read_text())
    assert report["ok"] and report["chain_ok"]
    assert (out / "epsilon.png").stat().st_size > 0
    with sqlite3.connect(out / "privacy.db") as db:  # a forger who knows to drop the guard
        db.execute("DROP TRIGGER IF EXISTS ledger_no_update")
        db.execute("UPDATE ledger SET epsilon = epsilon / 2 WHERE seq = 5")
    tampered = CliRunner().invoke(app, ["audit", str(out)])
    assert tampered.exit_code == 1


def test_user_central_run_has_one_server_row_per_round(tmp_path: Path, no_leftover_processes: None) -> None:
    out = tmp_path / "central"
    _simulate(out, "--dp", "user-central", "--epsilon", "4", "--clip", "0.5")
    rows = read_jsonl(out / METRICS_FILE)
    assert [r["ledger_rows"] for r in rows] == [1, 2, 3]
    assert rows[0]["epsilon_max"] < rows[1]["epsilon_max"] < rows[2]["epsilon_max"] <= 4
    audited = CliRunner().invoke(app, ["audit", str(out)])
    assert audited.exit_code == 0, audited.output


def test_bad_privacy_options_are_refused_before_anything_starts(tmp_path: Path) -> None:
    for args, message in ((["--dp", "record", "--epsilon", "0"], "epsilon must be > 0"),
                          (["--dp", "user-local", "--epsilon", "2", "--delta", "0.01"], "below 1/n"),
                          (["--dp", "user-central", "--epsilon", "1", "--noise-multiplier", "0.2"], "disagree")):
        result = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "x"), *args])
        assert result.exit_code == 2 and message in result.output, result.output
    missing = CliRunner().invoke(app, ["audit", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such run directory" in missing.output
