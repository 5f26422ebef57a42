"""A deployed device's mark that a SecAgg+ round is running on it, so it polls fast meanwhile.

A SecAgg+ round is four message exchanges (:mod:`fedrec.server.secure_rounds`): after
answering one stage the device waits for the next, which the server sends as soon as the
last device has answered. Flower 1.32's SuperNode looks for a new message every 3 s when it
has none (and two more local loops add up to 1.5 s), so each later stage would wait for
the slowest device to look again.
The ClientApp marks the round on the device (``STATE/secagg-round``, holding the time after
which the mark no longer counts) at setup and removes it after unmasking; the SuperNode
process (:mod:`fedrec.client.supernode_process`) polls every ``--busy-poll`` seconds while the
mark is there and current, and at Flower's interval otherwise. An abandoned round (the
server stopped asking) stops counting at the deadline: the device never polls fast for
longer than one round's timeout after its last stage.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

MARK_FILE = "secagg-round"
BUSY_POLL_S = 0.2  # the default seconds between a device's looks for a message during a round


def mark_round(state_dir: str | os.PathLike[str], seconds: float) -> None:
    """Mark a round as running on this device for at most ``seconds`` from now."""
    path = Path(state_dir) / MARK_FILE
    partial = path.with_suffix(".tmp")
    partial.write_text(repr(time.time() + float(seconds)))
    partial.replace(path)


def clear_round(state_dir: str | os.PathLike[str]) -> None:
    """The round ended on this device (or never started)."""
    (Path(state_dir) / MARK_FILE).unlink(missing_ok=True)


def round_running(state_dir: str | os.PathLike[str]) -> bool:
    """Whether a current mark is there (a missing, unreadable or expired mark is not)."""
    try:
        deadline = float((Path(state_dir) / MARK_FILE).read_text())
    except (OSError, ValueError):
        return False
    return time.time() < deadline
