"""End-to-end DP: `fedrec simulate --dp …` then `fedrec audit` on the run directory."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.core.run_files import METRICS_FILE, read_jsonl

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
    # one train row per client per round; round 3 evaluates 100 users (eval-fraction 0.1): one row each
    assert [r["ledger_rows"] for r in rows] == [10, 20, 130]
    assert all(0 < r["epsilon_max"] <= 8 for r in rows) and all(r["dp_refused"] == 0 for r in rows)
    _only_covered_numbers_are_shared(out, rows)
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
    assert [r["ledger_rows"] for r in rows] == [1, 2, 4]  # round 3: a train and an evaluate row
    assert rows[0]["epsilon_max"] < rows[1]["epsilon_max"] < rows[2]["epsilon_max"] <= 4
    _only_covered_numbers_are_shared(out, rows)
    audited = CliRunner().invoke(app, ["audit", str(out)])
    assert audited.exit_code == 0, audited.output


def _only_covered_numbers_are_shared(out: Path, rows: list[dict]) -> None:
    """metrics.jsonl and summary.json hold noised metrics, the ledger anchor and counts of refusals;
    the realised sample sizes and timings are in server_internal.jsonl; the plan and signed heads exist."""
    from fedrec.core.privacy.ledger import read_heads

    for row in rows:
        assert not {"clients", "nodes", "examples", "bytes_up", "wall_seconds", "train_loss"} & set(row), row
    internal = read_jsonl(out / "server_internal.jsonl")
    assert [r["round"] for r in internal] == [1, 2, 3] and all("clients" in r for r in internal)
    summary = json.loads((out / "summary.json").read_text())
    assert "wall_seconds" not in summary and "users_evaluated" not in summary and "hr@10" in summary
    assert (out / "privacy_plan.json").is_file() and (out / "ledger-signing.pub").is_file()
    heads = read_heads(out / "privacy.db")
    assert [(h.round, h.final) for h in heads] == [(1, False), (2, False), (3, True)]


def test_bad_privacy_options_are_refused_before_anything_starts(tmp_path: Path) -> None:
    for args, message in ((["--dp", "record", "--epsilon", "0"], "epsilon must be > 0"),
                          (["--dp", "user-local", "--epsilon", "2", "--delta", "0.01"], "below 1/n"),
                          (["--dp", "user-central", "--epsilon", "1", "--noise-multiplier", "0.2"], "disagree")):
        result = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "x"), *args])
        assert result.exit_code == 2 and message in result.output, result.output
    missing = CliRunner().invoke(app, ["audit", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such run directory" in missing.output
