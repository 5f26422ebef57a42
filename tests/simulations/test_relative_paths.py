"""The README's examples with relative paths: Flower's ServerApp runs in another working
directory, so every path must reach it absolute (it failed a minute in, before)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app

pytestmark = pytest.mark.slow


def _write_interactions(path: Path, users: int = 40, items: int = 60, per_user: int = 8) -> None:
    """A small ``user,item`` CSV: user u interacts with items u, u+1, …, u+per_user-1 (mod items)."""
    lines = ["user,item"] + [f"u{u},i{(u + k) % items}" for u in range(users) for k in range(per_user)]
    path.write_text("\n".join(lines) + "\n")


def test_simulate_with_a_relative_csv_and_out_as_in_the_readme(tmp_path: Path, monkeypatch,
                                                                no_leftover_processes: None) -> None:
    monkeypatch.chdir(tmp_path)
    _write_interactions(tmp_path / "my_interactions.csv")
    result = CliRunner().invoke(app, ["simulate", "--dataset", "my_interactions.csv", "--model", "gmf",
                                      "--rounds", "1", "--clients-per-round", "10", "--dim", "8",
                                      "--out", "runs/csv"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "runs" / "csv" / "summary.json").read_text())
    assert summary["rounds"] == 1 and "hr@10" in summary
    assert summary["config"]["dataset"] == str(tmp_path / "my_interactions.csv")
