"""The device polls fast only while a SecAgg+ round is marked as running on it."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from fedrec.client import supernode_process
from fedrec.client.round_in_progress import MARK_FILE, clear_round, mark_round, round_running
from fedrec.client.secagg_stages import FAST_POLL_WINDOW_S, mark_next_stage
from fedrec.client.supernode import supernode_command
from fedrec.client.supernode_process import RoundAwareClock


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
    waiting.sleep(3)
    waiting.sleep(0.5)  # Flower's wait for a reply: not an idle wait
    clear_round(tmp_path)
    waiting.sleep(3)
    assert clock.slept == [3, 0.25, 0.5, 3]
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


def test_flower_supernode_loop_still_waits_through_its_module_time() -> None:
    """The pinned Flower's loop idles with ``time.sleep(3)`` on its module's ``time``: if an
    upgrade changes that, the fast poll would silently do nothing, so this fails."""
    from flwr.supernode import start_client_internal

    assert start_client_internal.time is time
    assert "time.sleep(3)" in inspect.getsource(start_client_internal.start_client_internal)
    try:
        supernode_process.install(Path("/nonexistent"), 0.25)
        assert isinstance(start_client_internal.time, RoundAwareClock)
    finally:
        start_client_internal.time = time


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
