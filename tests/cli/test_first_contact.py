"""First contact: bad input gets one clear line (never a traceback), data nobody can be
evaluated on is refused before Flower starts, a failed run leaves --out reusable, and a
skipped round says so in the progress bar."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fake_process import EndedProcess
from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.core.config.run_config import RunConfig
from fedrec.core.run_files import METRICS_FILE
from fedrec.runtime.processes import pids_with_environ
from fedrec.simulations import simulate as sim
from fedrec.simulations.flower_runtime import RUNTIME_PARENT_ENV

runner = CliRunner()


def write_csv(path: Path, interactions_per_user: dict[str, int], n_items: int = 20) -> Path:
    """A ``user,item,rating,timestamp`` CSV: each user with its number of distinct items."""
    lines = []
    for number, (user, count) in enumerate(interactions_per_user.items()):
        lines += [f"{user},item{(number + i) % n_items},{1 + i % 5},{1000 + i}" for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_one_clear_line(result, *fragments: str) -> None:
    """Exit status 2, an ``error:`` line holding every fragment, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], result.output


@pytest.fixture
def no_flower(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting a Flower runtime fails the test: what is checked must be checked before it."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a Flower runtime was started")

    monkeypatch.setattr(sim, "simulation_runtime", refuse)


# --- messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["simulate", "--rounds", "1"], ["train-central", "--epochs", "1"]])
def test_a_binary_dataset_is_named_and_said_not_to_be_utf8_text(tmp_path: Path, command: list[str],
                                                                 no_flower: None) -> None:
    data = tmp_path / "some.bin"
    data.write_bytes(bytes(range(256)) * 4)
    result = runner.invoke(app, [*command, "--dataset", str(data), "--out", str(tmp_path / "run")])
    assert_one_clear_line(result, str(data), "not a UTF-8 text CSV")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["simulate", "--rounds", "1"], ["train-central", "--epochs", "1"]])
def test_out_below_a_regular_file_is_one_clear_line(tmp_path: Path, command: list[str], no_flower: None) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, [*command, "--out", str(blocker / "sub")])
    assert_one_clear_line(result, str(blocker), "is a file, not a folder")
    result = runner.invoke(app, [*command, "--out", str(blocker)])
    assert_one_clear_line(result, str(blocker), "is a file, not a folder")
    assert blocker.read_text() == "not a folder"


def test_audit_exits_2_when_a_run_file_is_not_text_as_the_readme_says(tmp_path: Path) -> None:
    """README: `fedrec audit` exits 1 when anything is wrong, 2 when the run cannot be audited."""
    from fedrec.core.privacy.ledger import LEDGER_FILE, PrivacyLedger

    run = tmp_path / "run"
    run.mkdir()
    with PrivacyLedger(run / LEDGER_FILE):
        pass
    (run / METRICS_FILE).write_bytes(bytes(range(256)))
    result = runner.invoke(app, ["audit", str(run)])
    assert_one_clear_line(result, str(run / METRICS_FILE), "not UTF-8 text", "cannot be audited")
    result = runner.invoke(app, ["audit", str(run), "--exact", "-1"])
    assert_one_clear_line(result, "--exact must be ≥ 0")


# --- the data, checked before Flower starts -----------------------------------------------------


@pytest.mark.parametrize("users", [{"alice": 1}, {f"u{n}": 1 for n in range(30)}],
                         ids=["one-user-one-interaction", "every-user-one-interaction"])
def test_data_nobody_can_be_evaluated_on_is_refused_before_flower(tmp_path: Path, users: dict[str, int],
                                                                  no_flower: None) -> None:
    data = write_csv(tmp_path / "data.csv", users)
    out = tmp_path / "run"
    result = runner.invoke(app, ["simulate", "--dataset", str(data), "--rounds", "1", "--out", str(out)])
    assert_one_clear_line(result, "nothing to evaluate", str(data), "fewer than 2 interactions")
    assert not out.exists()


def test_best_validation_without_validation_items_is_refused_before_flower(tmp_path: Path,
                                                                          no_flower: None) -> None:
    data = write_csv(tmp_path / "pairs.csv", {f"u{n}": 2 for n in range(10)})
    result = runner.invoke(app, ["simulate", "--dataset", str(data), "--protocol", "ncf-loo", "--rounds", "1",
                                 "--out", str(tmp_path / "run")])
    assert_one_clear_line(result, "best-validation", "validation item")


def test_users_that_cannot_be_evaluated_are_counted_and_named(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    users = {**{f"lonely{n}": 1 for n in range(7)}, **{f"busy{n}": 6 for n in range(5)}}
    data = write_csv(tmp_path / "mixed.csv", users)

    def stop(*args: object, **kwargs: object) -> None:
        raise RuntimeError("stopped where Flower would start")

    monkeypatch.setattr(sim, "simulation_runtime", stop)
    result = runner.invoke(app, ["simulate", "--dataset", str(data), "--rounds", "1", "--out", str(tmp_path / "r")])
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.output
    assert "7 of the 12 users" in warnings[0] and "cannot be evaluated" in warnings[0]
    assert "lonely0, lonely1, lonely2, lonely3, lonely4, … (2 more)" in warnings[0]
    assert "stopped where Flower would start" in result.output  # the warning came before
    assert not (tmp_path / "r").exists()  # the failed run created it and left no trace


# --- a failed run leaves --out reusable ---------------------------------------------------------


def fake_failed_run(checkpoint: bool):
    """A ``_run_once`` whose ServerApp wrote a round and crashed (with a checkpoint or not)."""
    def run_once(config: RunConfig, out_dir: Path, *args: object, **kwargs: object) -> int:
        (out_dir / METRICS_FILE).write_text(json.dumps({"round": 1, "train_loss": 0.5}) + "\n")
        (out_dir / "flower.log").write_text("ERROR : Simulation raised an exception\nTraceback (most recent call "
                                            "last):\n  File \"app.py\", line 1, in main\nValueError: boom\n")
        (out_dir / "superlink.log").write_text("superlink\n")
        if checkpoint:
            (out_dir / "checkpoint").mkdir()
            (out_dir / "checkpoint" / "state.json").write_text(
                json.dumps({"round": 1, "config": config.to_user_config()}))
        return 0

    return run_once


def small_config(**overrides: object) -> RunConfig:
    return RunConfig(rounds=2, clients_per_round=5, dim=8, **overrides)


def test_a_failed_run_without_checkpoint_removes_the_out_it_created_and_keeps_its_logs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim, "_run_once", fake_failed_run(checkpoint=False))
    monkeypatch.setenv(RUNTIME_PARENT_ENV, str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "run"
    with pytest.raises(RuntimeError) as failure:
        sim.simulate(small_config(), out, show_progress=False)
    assert "ValueError: boom" in str(failure.value)  # the cause, not only "see flower.log"
    assert not out.exists()
    kept = [p for p in (tmp_path / "tmp").iterdir() if p.name.startswith("fedrec-failed-")]
    assert len(kept) == 1 and str(kept[0]) in str(failure.value)
    assert "ValueError: boom" in (kept[0] / "flower.log").read_text()
    assert (kept[0] / "superlink.log").is_file()


def test_a_failed_run_in_an_existing_folder_removes_only_what_it_added(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim, "_run_once", fake_failed_run(checkpoint=False))
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        sim.simulate(small_config(), out, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["flower.log", "notes.txt", "superlink.log"]
    with pytest.raises(RuntimeError, match="boom"):  # not "already holds a run": the same --out runs again
        sim.simulate(small_config(), out, show_progress=False)


def test_a_failed_run_with_a_checkpoint_stays_resumable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim, "_run_once", fake_failed_run(checkpoint=True))
    out = tmp_path / "run"
    with pytest.raises(RuntimeError) as failure:
        sim.simulate(small_config(), out, show_progress=False)
    assert f"--resume {out}" in str(failure.value) and "round 1" in str(failure.value)
    assert (out / METRICS_FILE).is_file() and (out / "flower.log").is_file()
    assert sim.resume_config(out, {}).resume


# --- progress -------------------------------------------------------------------------------------


def test_a_skipped_round_shows_skipped_not_loss_zero(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / METRICS_FILE).write_text(json.dumps({"round": 1, "train_loss": None, "skipped": True}) + "\n")
    sim._follow(EndedProcess(), tmp_path, RunConfig(rounds=2), True, 0.0, None)
    shown = capsys.readouterr().out
    assert "round 1/2" in shown and "skipped" in shown
    assert "loss 0.0000" not in shown


# --- end to end: refused, then the same command with good data ------------------------------------


@pytest.fixture
def no_leftover_processes():
    """Nothing this test starts outlives it (processes carry the session's FLWR_HOME)."""
    def live() -> set[int]:
        return pids_with_environ(f"FLWR_HOME={os.environ['FEDREC_RUNTIME_DIR']}/")

    before = live()
    yield
    leftover = live() - before - {os.getpid()}
    assert not leftover, f"processes left behind: {sorted(leftover)}"


@pytest.mark.slow
def test_a_refused_run_then_good_data_with_the_same_out_succeeds(tmp_path: Path,
                                                                  no_leftover_processes: None) -> None:
    out = tmp_path / "run"
    command = ["simulate", "--rounds", "1", "--clients-per-round", "4", "--dim", "8", "--quiet", "--out", str(out)]
    bad = write_csv(tmp_path / "bad.csv", {f"u{n}": 1 for n in range(8)})
    refused = runner.invoke(app, [*command, "--dataset", str(bad)])
    assert_one_clear_line(refused, "nothing to evaluate")
    good = write_csv(tmp_path / "good.csv", {f"u{n}": 6 for n in range(8)})
    result = runner.invoke(app, [*command, "--dataset", str(good)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["rounds"] == 1
