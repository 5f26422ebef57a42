"""The device polls fast only while a SecAgg+ round is marked as running on it."""

from __future__ import annotations

import inspect
import subprocess
import time
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from fedrec.client import supernode_process
from fedrec.client.round_in_progress import MARK_FILE, clear_round, mark_round, round_running
from fedrec.client.secagg_stages import FAST_POLL_WINDOW_S, mark_next_stage
from fedrec.client.supernode import supernode_command
from fedrec.client.supernode_process import RoundAwareClock, SuperexecThroughUs


class RecordingClock:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def monotonic(self) -> float:
        return 42.0


def test_idle_waits_are_short_only_while_a_round_is_marked(tmp_path: Path) -> None:
    clock = RecordingClock()
    waiting = RoundAwareClock(tmp_path, 0.25, clock)  # type: ignore[arg-type]
    waiting.sleep(3)
    mark_round(tmp_path, 60)
    waiting.sleep(3)  # no message yet
    waiting.sleep(0.5)  # the reply is not there yet
    waiting.sleep(0.1)  # already shorter than the busy poll
    clear_round(tmp_path)
    waiting.sleep(3)
    assert clock.slept == [3, 0.25, 0.25, 0.1, 3]
    assert waiting.monotonic() == 42.0  # everything else is the clock's


def test_an_expired_or_garbled_mark_does_not_count(tmp_path: Path) -> None:
    mark_round(tmp_path, -1.0)
    assert not round_running(tmp_path)
    (tmp_path / MARK_FILE).write_text("not a time")
    assert not round_running(tmp_path)
    mark_round(tmp_path, 30.0)
    assert round_running(tmp_path)


def test_busy_poll_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="busy-poll"):
        RoundAwareClock(tmp_path, 0.0)


def test_flower_loops_still_wait_through_their_module_time() -> None:
    """The pinned Flower's loops poll with ``time.sleep`` on their modules' ``time`` and the
    SuperNode starts ``flower-superexec`` with its module's ``subprocess.Popen``: if an upgrade
    changes that, the fast poll would silently do nothing, so this fails."""
    from flwr.supercore.superexec import run_superexec
    from flwr.supernode import start_client_internal

    assert start_client_internal.time is time and run_superexec.time is time
    assert start_client_internal.subprocess is subprocess
    supernode_source = inspect.getsource(start_client_internal)
    assert "time.sleep(3)" in supernode_source and "time.sleep(0.5)" in supernode_source
    assert '["flower-superexec"]' in supernode_source and "subprocess.Popen(command)" in supernode_source
    assert "time.sleep(1)" in inspect.getsource(run_superexec.run_superexec)
    try:
        supernode_process.install(Path("/nonexistent"), 0.25)
        supernode_process.install_superexec(Path("/nonexistent"), 0.25)
        assert isinstance(start_client_internal.time, RoundAwareClock)
        assert isinstance(run_superexec.time, RoundAwareClock)
        assert isinstance(start_client_internal.subprocess, SuperexecThroughUs)
    finally:
        start_client_internal.time = time
        start_client_internal.subprocess = subprocess
        run_superexec.time = time


def test_the_superexec_child_is_started_through_the_round_aware_process(tmp_path: Path) -> None:
    started: list[list[str]] = []

    class RecordingSubprocess:
        def Popen(self, command: list[str]) -> None:  # noqa: N802
            started.append(command)

    through = SuperexecThroughUs(tmp_path, 0.2, RecordingSubprocess())  # type: ignore[arg-type]
    through.Popen(["flower-superexec", "--insecure", "--appio-api-address", "127.0.0.1:1"])
    through.Popen(["something-else", "--x"])
    assert started[0][1:4] == ["-m", "fedrec.client.supernode_process", "--superexec"]
    assert started[0][started[0].index("--") + 1:] == ["--insecure", "--appio-api-address", "127.0.0.1:1"]
    assert started[1] == ["something-else", "--x"]


def test_stages_mark_the_round_on_a_deployed_device_and_unmask_clears_it(tmp_path: Path) -> None:
    context = Context(run_id=1, node_id=3, state=RecordDict(), run_config={"round-timeout": 3600.0},
                      node_config={"state-dir": str(tmp_path)})
    before = time.time()
    mark_next_stage(context, expected=True)
    deadline = float((tmp_path / MARK_FILE).read_text())
    assert before + FAST_POLL_WINDOW_S - 1 <= deadline <= time.time() + FAST_POLL_WINDOW_S  # capped
    mark_next_stage(context, expected=False)
    assert not (tmp_path / MARK_FILE).exists()
    simulated = Context(run_id=1, node_id=3, state=RecordDict(), run_config={}, node_config={})
    mark_next_stage(simulated, expected=True)  # no state dir: nothing written, no error


def test_the_device_command_runs_flower_through_the_round_aware_process(tmp_path: Path) -> None:
    command = supernode_command("127.0.0.1:9092", None, None, tmp_path / "d.csv", tmp_path, "cpu", True, 9094, 0.5)
    assert command[1:3] == ["-m", "fedrec.client.supernode_process"]
    assert command[command.index("--busy-poll") + 1] == "0.5"
    assert command[command.index("--") + 1:][:2] == ["--superlink", "127.0.0.1:9092"]


def test_a_forked_clientapp_runs_flowers_entry_point_with_the_arguments() -> None:
    """The fork server's child runs ``flwr_clientapp`` itself: ``--help`` exits 0, an unknown
    option exits 2 (Flower's argparse), and other commands stay ``subprocess``'s."""
    from fedrec.client.forked_clientapp import ForkedClientApps

    launched: list[list[str]] = []

    class RecordingSubprocess:
        def Popen(self, command: list[str]) -> None:  # noqa: N802
            launched.append(command)

    forked = ForkedClientApps(RecordingSubprocess())  # type: ignore[arg-type]
    helped = forked.Popen(["flwr-clientapp", "--help"])
    refused = forked.Popen(["flwr-clientapp", "--no-such-option"])
    helped.join(120)
    refused.join(120)
    assert (helped.exitcode, refused.exitcode) == (0, 2)
    forked.Popen(["flwr-serverapp", "--x"])
    assert launched == [["flwr-serverapp", "--x"]]


def test_without_a_fork_server_the_clientapp_starts_as_flower_starts_it() -> None:
    from fedrec.client.forked_clientapp import ForkedClientApps

    launched: list[list[str]] = []

    class RecordingSubprocess:
        def Popen(self, command: list[str]) -> str:  # noqa: N802
            launched.append(command)
            return "started"

    class BrokenContext:
        def Process(self, **kwargs):  # noqa: N802
            class Unstartable:
                def start(self) -> None:
                    raise OSError("fork server gone")
            return Unstartable()

    forked = ForkedClientApps(RecordingSubprocess())  # type: ignore[arg-type]
    forked._context = BrokenContext()  # type: ignore[assignment]
    assert forked.Popen(["flwr-clientapp", "--token", "t"]) == "started"
    assert launched == [["flwr-clientapp", "--token", "t"]]


def test_a_bad_busy_poll_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from fedrec.client.supernode import ClientError, start_client

    for bad in (0.0, -1.0, 61.0):
        with pytest.raises(ClientError, match="busy-poll"):
            start_client("127.0.0.1:9092", None, None, tmp_path / "d.csv", tmp_path / "state", insecure=True,
                         busy_poll=bad)
    assert not (tmp_path / "state").exists()
