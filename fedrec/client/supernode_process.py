"""The device's SuperNode process: Flower's ``flower-supernode``, polling fast during a SecAgg+ round.

    python -m fedrec.client.supernode_process --state-dir STATE --busy-poll 0.25 -- <flower-supernode args>

Flower 1.32's SuperNode loop (``flwr.supernode.start_client_internal``) asks the SuperLink
for a message and, when there is none, waits ``time.sleep(3)`` before asking again; the
interval is not an option. Under ``dp user-distributed`` one round is four exchanges and
every later stage waits for the slowest device's next look, so up to 3 s a stage. This
process runs Flower's own entry point with one change: the loop's idle wait (any wait of
a second or more) is ``--busy-poll`` seconds while the device's mark of a running round
is there and current (:mod:`fedrec.client.round_in_progress`, written by the ClientApp),
and Flower's wait otherwise. Short waits (Flower's 0.5 s wait for a reply) are untouched.
``--busy-poll 3`` (or more) keeps Flower's behaviour throughout.

``tests/client/test_supernode_process.py`` checks the pinned Flower still waits through
that module's ``time.sleep`` (the change would do nothing otherwise).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from fedrec.client.round_in_progress import BUSY_POLL_S, round_running

IDLE_WAIT_S = 1.0  # waits at least this long are the loop's "no message" waits


class RoundAwareClock:
    """Stands in for the ``time`` module inside Flower's SuperNode loop: every attribute is
    ``time``'s, except that an idle ``sleep`` is shortened to ``busy_poll`` seconds while a
    round is marked as running in ``state_dir``."""

    def __init__(self, state_dir: Path, busy_poll: float, clock: ModuleType = time) -> None:
        if not busy_poll > 0:
            raise ValueError(f"--busy-poll must be positive, got {busy_poll}")
        self._state_dir = state_dir
        self._busy_poll = busy_poll
        self._clock = clock

    def sleep(self, seconds: float) -> None:
        if seconds >= IDLE_WAIT_S and self._busy_poll < seconds and round_running(self._state_dir):
            seconds = self._busy_poll
        self._clock.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._clock, name)


def install(state_dir: Path, busy_poll: float) -> None:
    """Make Flower's SuperNode loop wait through a :class:`RoundAwareClock`."""
    from flwr.supernode import start_client_internal

    start_client_internal.time = RoundAwareClock(state_dir, busy_poll)  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fedrec.client.supernode_process", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True, help="the device's state directory")
    parser.add_argument("--busy-poll", type=float, default=BUSY_POLL_S,
                        help="seconds between looks for a message while a SecAgg+ round runs here")
    parser.add_argument("flower_args", nargs=argparse.REMAINDER, help="-- then flower-supernode's arguments")
    args = parser.parse_args(argv)
    flower_args = args.flower_args[1:] if args.flower_args[:1] == ["--"] else args.flower_args
    install(args.state_dir, args.busy_poll)
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *flower_args]
    flower_supernode()


if __name__ == "__main__":
    main()
