"""``fedrec server run`` shows its progress: one line per round, the devices it waits for, and
once a warning when the training loss keeps rising (no server is started here: the run's
files are written by the tests)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fake_process import EndedProcess
from typer.testing import CliRunner

import fedrec.server.loop as loop
import fedrec.server.superlink as superlink
import fedrec.simulations.simulate as sim
from fedrec.cli.main import app
from fedrec.core.config.run_config import RunConfig
from fedrec.core.run_files import METRICS_FILE, SUMMARY_FILE
from fedrec.reporting.progress import RunFollower, read_complete_rows, round_line

runner = CliRunner()
RISING = [0.69, 0.52, 0.41, 0.37, 0.36, 0.39, 0.45, 0.55, 0.68, 0.84]


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def row(r: int, loss: float | None = 0.5, **more: Any) -> str:
    return json.dumps({"round": r, "train_loss": loss, "nodes": 2, "nodes_asked": 2, "wall_seconds": 4.25,
                       **more}) + "\n"


class Printed:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def follower(self, run_dir: Path, rounds: int = 3, log: Path | None = None, offset: int = 0) -> RunFollower:
        return RunFollower(run_dir / METRICS_FILE, rounds, 10, self.lines.append, self.warnings.append,
                           log_path=log, log_offset=offset)


# --- the follower, fed growing files --------------------------------------------------------------


def test_the_follower_prints_waiting_devices_then_each_round_once(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("output of an earlier run: waiting for devices: 0 of 9 connected (min-nodes)\n")
    printed = Printed()
    follower = printed.follower(tmp_path, log=log, offset=log.stat().st_size)
    follower.poll()
    assert printed.lines == []  # nothing yet: the earlier run's log is not this run's
    append(log, "INFO :      Starting the ServerApp\nwaiting for devices: 0 of 2 connected (min-nodes)\n")
    follower.poll()
    append(log, "waiting for devices: 0 of 2 connected (min-nodes)\nwaiting for devices: 1 of 2 conn")
    follower.poll()  # the same count is not printed twice; half a line waits for its end
    append(log, "ected (min-nodes)\ndevices connected: 2 (min-nodes 2); training starts\n")
    follower.poll()
    assert printed.lines == ["waiting for devices: 0 of 2 connected (min-nodes)",
                             "waiting for devices: 1 of 2 connected (min-nodes)",
                             "devices connected: 2 (min-nodes 2); training starts"]
    metrics = tmp_path / METRICS_FILE
    append(metrics, row(1, 0.6931) + row(2, 0.6012, **{"hr@10": 0.1234, "ndcg@10": 0.0567})[:20])
    follower.poll()  # round 2's line is still being written
    append(metrics, row(2, 0.6012, **{"hr@10": 0.1234, "ndcg@10": 0.0567})[20:])
    follower.poll()
    # a device left: Flower's node sampling waits (and says so every second)
    append(log, "INFO :      Waiting for nodes to connect: 1 connected (minimum required: 2).\n" * 3)
    follower.poll()
    follower.poll()
    assert printed.lines[3:] == [
        "round 1/3: 2 devices online, 2 replies, 4.2 s; loss 0.6931",
        "round 2/3: 2 devices online, 2 replies, 4.2 s; loss 0.6012; HR@10 0.1234  NDCG@10 0.0567",
        "waiting for devices: 1 of 2 connected (min-nodes)",
    ]
    assert printed.warnings == []


def test_a_rising_loss_is_warned_about_once(tmp_path: Path) -> None:
    printed = Printed()
    follower = printed.follower(tmp_path, rounds=20)
    for r, loss in enumerate(RISING + [1.2, 1.9, 2.5], start=1):
        append(tmp_path / METRICS_FILE, row(r, loss))
        follower.poll()
    [warning] = printed.warnings  # as soon as round 8 landed, and not again
    assert warning.startswith("the training loss rose from 0.37 (round 4) to 0.55 (round 8)")
    assert "--lr" in warning and "--server-lr" in warning
    assert len(printed.lines) == 13


def test_under_dp_a_round_shows_only_what_metrics_jsonl_holds(tmp_path: Path) -> None:
    printed = Printed()
    follower = printed.follower(tmp_path, rounds=12)
    for r in range(1, 13):  # the shared rows of a DP run: no loss, timing or device counts
        shared = {"round": r, "ledger_rows": 2 * r, "ledger_head": "ab12", "dp_refused": 0, "epsilon_max": 0.1 * r}
        if r % 4 == 0:
            shared.update({"hr@10": 0.2, "ndcg@10": 0.1})
        append(tmp_path / METRICS_FILE, json.dumps(shared) + "\n")
        follower.poll()
    assert printed.lines[0] == "round 1/12: ε 0.1"
    assert printed.lines[3] == "round 4/12: HR@10 0.2000  NDCG@10 0.1000; ε 0.4"
    assert not any("loss" in line or "device" in line or " s;" in line for line in printed.lines)
    assert printed.warnings == []  # no loss to read: the guard stays silent


def test_a_resumed_run_prints_only_its_new_rounds(tmp_path: Path) -> None:
    metrics = tmp_path / METRICS_FILE
    metrics.write_text("".join(row(r) for r in range(1, 5)))
    printed = Printed()
    follower = printed.follower(tmp_path, rounds=6)
    metrics.write_text("".join(row(r) for r in range(1, 4)))  # the rows after the checkpoint (round 3) go
    follower.poll()
    append(metrics, row(4) + row(5))
    follower.poll()
    assert [line.split(":")[0] for line in printed.lines] == ["round 4/6", "round 5/6"]


def test_skipped_and_lossless_rounds_say_so() -> None:
    assert round_line({"round": 2, "skipped": True, "train_loss": None, "nodes": 1}, 5, 10) == \
        "round 2/5: 1 reply; skipped (too few valid updates, model unchanged)"
    assert round_line({"round": 3, "train_loss": None, "nodes_asked": 1, "nodes": 0}, 5, 10) == \
        "round 3/5: 1 device online, 0 replies; no training loss reported"
    assert round_line({"round": 4, "train_loss": 0.25, "rmse": 0.9, "mae": 0.7}, 5, 10) == \
        "round 4/5: loss 0.2500; RMSE 0.9000  MAE 0.7000"


def test_unfinished_or_broken_lines_are_not_rows(tmp_path: Path) -> None:
    path = tmp_path / METRICS_FILE
    assert read_complete_rows(path) == []
    path.write_text(row(1) + "not json\n" + '["a list"]\n' + row(2)[:10])
    assert [r["round"] for r in read_complete_rows(path)] == [1]


# --- the server loop says it waits --------------------------------------------------------------


class _Grid:
    def __init__(self, counts: list[int]) -> None:
        self.counts = counts

    def get_node_ids(self) -> list[int]:
        return list(range(self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]))


def test_the_server_loop_prints_that_it_waits_for_devices(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(loop.time, "sleep", lambda _: None)
    assert loop._wait_for_nodes(_Grid([0, 0, 0, 1, 1, 3]), 2) == 3
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["waiting for devices: 0 of 2 connected (min-nodes)",
                       "waiting for devices: 1 of 2 connected (min-nodes)",
                       "devices connected: 3 (min-nodes 2); training starts"]


def test_the_follower_reads_what_the_loop_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(loop.time, "sleep", lambda _: None)
    loop._wait_for_nodes(_Grid([1, 2]), 2)
    log = tmp_path / "run.log"
    log.write_text(capsys.readouterr().out)
    printed = Printed()
    printed.follower(tmp_path, log=log).poll()
    assert printed.lines == ["waiting for devices: 1 of 2 connected (min-nodes)",
                             "devices connected: 2 (min-nodes 2); training starts"]


# --- submit_run polls while flwr runs --------------------------------------------------------------


def fake_flwr(monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """``flwr run`` replaced by a short Python script (no server is started)."""
    monkeypatch.setattr(superlink, "running_pid", lambda _: 1)
    monkeypatch.setattr(superlink, "run_command", lambda *_: [sys.executable, "-c", textwrap.dedent(script)])
    monkeypatch.setattr(superlink, "server_environment", lambda _: None)


def test_submit_run_polls_while_the_run_goes_and_once_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = tmp_path / METRICS_FILE
    fake_flwr(monkeypatch, f"""
        import json, time
        for r in (1, 2):
            time.sleep(0.4)
            with open({str(metrics)!r}, "a") as f:
                f.write(json.dumps({{"round": r, "train_loss": 0.5}}) + "\\n")
        print("done")
        """)
    seen: list[int] = []
    code = superlink.submit_run(tmp_path, {}, tmp_path / "run.log", timeout_s=60,
                                on_poll=lambda: seen.append(len(read_complete_rows(metrics))), poll_s=0.05)
    assert code == 0
    assert len(seen) >= 3 and seen[-1] == 2 and 0 in seen  # it looked during the run, and after it ended
    assert (tmp_path / "run.log").read_text() == "done\n"


def test_submit_run_with_a_follower_still_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_flwr(monkeypatch, "import time; time.sleep(60)")
    polls: list[None] = []
    with pytest.raises(TimeoutError):
        superlink.submit_run(tmp_path, {}, tmp_path / "run.log", timeout_s=0.5, on_poll=lambda: polls.append(None),
                             poll_s=0.05)
    assert polls


# --- fedrec server run, end to end with a fake submission --------------------------------------------


def test_server_run_shows_devices_rounds_and_the_divergence_warning(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_submit(state_dir: Path, run_config: dict[str, Any], log_path: Path, on_poll: Any = None,
                    **_: Any) -> int:
        run_dir = Path(str(run_config["out-dir"]))
        run_dir.mkdir(parents=True)
        append(log_path, "waiting for devices: 1 of 2 connected (min-nodes)\n")
        on_poll()
        append(log_path, "waiting for devices: 1 of 2 connected (min-nodes)\n"
                         "devices connected: 2 (min-nodes 2); training starts\n")
        on_poll()
        for r, loss in enumerate(RISING, start=1):
            append(run_dir / METRICS_FILE, row(r, loss, **({"hr@10": 0.1, "ndcg@10": 0.05} if r % 5 == 0 else {})))
            on_poll()
        (run_dir / SUMMARY_FILE).write_text(json.dumps({"rounds": 10, "hr@10": 0.1, "ndcg@10": 0.05}))
        return 0

    monkeypatch.setattr(superlink, "submit_run", fake_submit)
    catalogue = tmp_path / "items.txt"
    catalogue.write_text("i1\ni2\n")
    result = runner.invoke(app, ["server", "run", "--catalogue", str(catalogue), "--state", str(tmp_path / "s"),
                                 "--name", "r1", "--rounds", "10", "--min-nodes", "2"])
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[1] == "submitting the run: 10 rounds with at least 2 device(s) (min-nodes)"
    assert out[2:4] == ["waiting for devices: 1 of 2 connected (min-nodes)",
                        "devices connected: 2 (min-nodes 2); training starts"]
    assert out[4] == "round 1/10: 2 devices online, 2 replies, 4.2 s; loss 0.6900"
    assert out[8] == "round 5/10: 2 devices online, 2 replies, 4.2 s; loss 0.3600; HR@10 0.1000  NDCG@10 0.0500"
    assert out[13].startswith("round 10/10") and out[14].startswith("done: 10 rounds")
    assert result.stderr.count("warning: the training loss rose") == 1
    assert "--server-lr" in result.stderr


# --- fedrec simulate's progress bar warns too -----------------------------------------------------------


def test_simulate_warns_once_when_the_loss_keeps_rising(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / METRICS_FILE).write_text("".join(row(r, loss) for r, loss in enumerate(RISING, start=1))
                                         + '{"round": 11, "train')  # a line being written is skipped
    sim._follow(EndedProcess(), tmp_path, RunConfig(rounds=20), True, 0.0, None)
    captured = capsys.readouterr()
    assert captured.err.count("warning: the training loss rose from 0.37 (round 4) to 0.68 (round 9)") == 1
    assert "round 10/20" in captured.out


def test_simulate_is_silent_about_a_falling_loss(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / METRICS_FILE).write_text("".join(row(r, 0.7 * 0.9 ** r) for r in range(1, 11)))
    sim._follow(EndedProcess(), tmp_path, RunConfig(rounds=10), True, 0.0, None)
    assert "warning" not in capsys.readouterr().err
