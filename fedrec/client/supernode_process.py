"""The device's SuperNode process: Flower's ``flower-supernode``, polling fast during a SecAgg+ round.

    python -m fedrec.client.supernode_process --state-dir STATE --busy-poll 0.2 -- <flower-supernode args>

A message reaches a Flower 1.32 device through three polling loops: the SuperNode asks
the SuperLink for a message every 3 s when it has none (``flwr.supernode.start_client_internal``),
its ``flower-superexec`` child looks for a message to start a ClientApp process for every
1 s (``flwr.supercore.superexec.run_superexec``), and the SuperNode looks for the ClientApp's
reply every 0.5 s. None of the intervals is an option. Under ``dp user-distributed`` one
round is four exchanges and every later stage waits for the slowest device, so up to
~4.5 s a stage is spent waiting. This process runs Flower's own entry points with one
change: in those two modules every wait longer than ``--busy-poll`` seconds is
``--busy-poll`` seconds while the device's mark of a running round is there and current
(:mod:`fedrec.client.round_in_progress`, written by the ClientApp), and Flower's wait
otherwise (between rounds a device polls as Flower does). The SuperNode's superexec child
is started through this module (``--superexec``) for the same change, and it starts each
ClientApp process from a fork server that has imported Flower and the ClientApp once
(:mod:`fedrec.client.forked_clientapp`). ``--busy-poll 3`` keeps Flower's intervals throughout.

``tests/client/test_supernode_process.py`` checks that the pinned Flower still waits
through those modules' ``time.sleep`` and starts ``flower-superexec`` through its
``subprocess.Popen`` (the change would do nothing otherwise).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from fedrec.client.forked_clientapp import ForkedClientApps
from fedrec.client.round_in_progress import BUSY_POLL_S, round_running

SUPEREXEC = "flower-superexec"
MODULE = "fedrec.client.supernode_process"  # not __name__: that is "__main__" when run with -m


def process_command(state_dir: Path, busy_poll: float, flower_args: list[str], superexec: bool = False) -> list[str]:
    """The command line that runs Flower's SuperNode (or, ``superexec``, its superexec child)
    through this module with ``flower_args``."""
    return [sys.executable, "-m", MODULE, *(["--superexec"] if superexec else []), "--state-dir", str(state_dir),
            "--busy-poll", repr(float(busy_poll)), "--", *flower_args]


class RoundAwareClock:
    """Stands in for the ``time`` module inside a Flower polling loop: every attribute is
    ``time``'s, except that a ``sleep`` longer than ``busy_poll`` seconds is shortened to
    ``busy_poll`` while a round is marked as running in ``state_dir``."""

    def __init__(self, state_dir: Path, busy_poll: float, clock: ModuleType = time) -> None:
        if not busy_poll > 0:
            raise ValueError(f"--busy-poll must be positive, got {busy_poll}")
        self._state_dir = state_dir
        self._busy_poll = busy_poll
        self._clock = clock

    def sleep(self, seconds: float) -> None:
        if seconds > self._busy_poll and round_running(self._state_dir):
            seconds = self._busy_poll
        self._clock.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._clock, name)


class SuperexecThroughUs:
    """Stands in for ``subprocess`` inside Flower's SuperNode: ``Popen(["flower-superexec", …])``
    starts this module with ``--superexec`` instead (the same arguments after ``--``)."""

    def __init__(self, state_dir: Path, busy_poll: float, module: ModuleType = subprocess) -> None:
        self._state_dir = state_dir
        self._busy_poll = busy_poll
        self._module = module

    def Popen(self, command: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 (subprocess's name)
        if isinstance(command, list) and command[:1] == [SUPEREXEC]:
            command = process_command(self._state_dir, self._busy_poll, command[1:], superexec=True)
        return self._module.Popen(command, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def install(state_dir: Path, busy_poll: float) -> None:
    """Make Flower's SuperNode loop wait through a :class:`RoundAwareClock` and start its
    superexec child through this module."""
    from flwr.supernode import start_client_internal

    start_client_internal.time = RoundAwareClock(state_dir, busy_poll)  # type: ignore[assignment]
    start_client_internal.subprocess = SuperexecThroughUs(state_dir, busy_poll)  # type: ignore[assignment]


def install_superexec(state_dir: Path, busy_poll: float) -> None:
    """Make Flower's superexec loop wait through a :class:`RoundAwareClock` and start each
    ClientApp process from a fork server (:mod:`fedrec.client.forked_clientapp`)."""
    from flwr.supercore.superexec import run_superexec
    from flwr.supercore.superexec.executor import subprocess_executor

    run_superexec.time = RoundAwareClock(state_dir, busy_poll)  # type: ignore[assignment]
    subprocess_executor.subprocess = ForkedClientApps()  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True, help="the device's state directory")
    parser.add_argument("--busy-poll", type=float, default=BUSY_POLL_S,
                        help="seconds between looks for a message while a SecAgg+ round runs here")
    parser.add_argument("--superexec", action="store_true", help="run flower-superexec (the SuperNode's child)")
    parser.add_argument("flower_args", nargs=argparse.REMAINDER, help="-- then Flower's arguments")
    args = parser.parse_args(argv)
    flower_args = args.flower_args[1:] if args.flower_args[:1] == ["--"] else args.flower_args
    if args.superexec:
        install_superexec(args.state_dir, args.busy_poll)
        from flwr.supercore.cli import flower_superexec

        sys.argv = [SUPEREXEC, *flower_args]
        flower_superexec()
        return
    install(args.state_dir, args.busy_poll)
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *flower_args]
    flower_supernode()


if __name__ == "__main__":
    main()
