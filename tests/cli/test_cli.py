"""The command line: clear errors on bad input, and the central twin end to end."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fedrec.cli.main import app

runner = CliRunner()


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--model", "transformer", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "unknown model 'transformer'" in result.output
    assert not (tmp_path / "r").exists()  # nothing was started or written


def test_unknown_dataset_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train-central", "--dataset", "netflix", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "unknown dataset 'netflix'" in result.output


def test_malformed_csv_names_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "bad.csv"
    data.write_text("u1,i1,5\nu2,i2\n")
    result = runner.invoke(app, ["train-central", "--dataset", str(data), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "bad.csv line 2" in result.output


def test_simulate_requires_out_or_resume() -> None:
    result = runner.invoke(app, ["simulate"])
    assert result.exit_code == 2 and "--out" in result.output


def test_download_refuses_other_datasets(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "download", "ml-25m", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "only ml-100k" in result.output


def test_train_central_writes_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "central"
    result = runner.invoke(app, ["train-central", "--epochs", "2", "--dim", "8", "--lr", "0.01",
                                 "--eval-every", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["config"]["mode"] == "central"


def test_unknown_executor_or_device_is_a_clear_error(tmp_path: Path) -> None:
    for flag, value, message in (("--executor", "threads", "unknown executor"), ("--device", "tpu", "unknown device"),
                                 ("--cohort-nodes", "0", "cohort-nodes must be ≥ 1")):
        result = runner.invoke(app, ["simulate", flag, value, "--out", str(tmp_path / "r")])
        assert result.exit_code != 0
        assert message in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_ledger_key_prints_and_writes_the_public_key(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from fedrec.cli.main import app
    from fedrec.core.privacy.signing import LedgerSigner, read_public_key

    monkeypatch.setenv("FEDREC_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["ledger-key", "--out", str(tmp_path / "server.pub")])
    assert result.exit_code == 0, result.output
    key = result.output.strip()
    assert read_public_key(tmp_path / "server.pub") == key
    assert LedgerSigner.load_or_create(tmp_path / "home" / "ledger-signing.key").public_key_hex() == key
    assert (tmp_path / "home" / "ledger-signing.key").stat().st_mode & 0o077 == 0


def test_zero_rounds_is_refused_not_replaced_by_the_default(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--rounds", "0", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--rounds must be ≥ 1" in result.output
    assert not (tmp_path / "r").exists()


def test_relative_data_paths_are_made_absolute(tmp_path: Path, monkeypatch) -> None:
    from fedrec.cli.simulate import _absolute_data_paths

    (tmp_path / "my.csv").write_text("u,i\n")
    monkeypatch.chdir(tmp_path)
    dataset, data_dir = _absolute_data_paths("my.csv", "data")
    assert dataset == str(tmp_path / "my.csv") and data_dir == str(tmp_path / "data")
    assert _absolute_data_paths("synthetic", "") == ("synthetic", "")


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"fedrec {version('fedrec')}"


def test_every_train_central_option_has_help() -> None:
    import click
    import typer.main

    command = typer.main.get_command(app).commands["train-central"]  # type: ignore[attr-defined]
    undocumented = [p.name for p in command.params if isinstance(p, click.Option) and not p.help]
    assert undocumented == []
