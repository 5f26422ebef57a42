"""Progress of a running federated run, read from the files it writes.

The ServerApp appends one row per round to ``metrics.jsonl`` (:mod:`fedrec.server.loop`)
and, deployed, prints while it waits for devices (:func:`waiting_line`,
:func:`connected_line`); Flower prints its own "Waiting for nodes to connect" when a round
lacks devices. ``flwr run --stream`` copies those prints into the run's log.
:class:`RunFollower` reads both files as they grow and prints one line per round
(:func:`round_line`) and each change in the number of devices waited for, and, once per
run, the divergence warning (:mod:`fedrec.core.evaluation.divergence`).
``fedrec simulate`` shows the same round text in its progress bar (:func:`progress_text`).

Under a DP mode ``metrics.jsonl`` holds only what the mechanisms cover (no loss, no
timing, no counts of devices or replies), so a round line shows only that.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable

from fedrec.core.evaluation.divergence import divergence_warning, loss_series

# printed by the ServerApp (fedrec.server.loop) while it waits for min-nodes devices, and once they are there
WAITING = re.compile(r"waiting for devices: (\d+) of (\d+) connected")
CONNECTED = re.compile(r"devices connected: (\d+) \(min-nodes (\d+)\)")
# logged by Flower's node sampling when a round finds fewer nodes than it needs
FLOWER_WAITING = re.compile(r"Waiting for nodes to connect: (\d+) connected \(minimum required: (\d+)\)")


def waiting_line(connected: int, needed: int) -> str:
    return f"waiting for devices: {connected} of {needed} connected (min-nodes)"


def connected_line(connected: int, needed: int) -> str:
    return f"devices connected: {connected} (min-nodes {needed}); training starts"


# --- what a round shows -------------------------------------------------------------------


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def loss_text(row: dict[str, Any]) -> str:
    """The round's training loss, or why there is none (``""``: the row has no loss field, as under DP)."""
    if row.get("skipped"):
        return "skipped (too few valid updates, model unchanged)"
    if "train_loss" not in row:
        return ""
    if row["train_loss"] is None:
        return "no training loss reported"
    return f"loss {row['train_loss']:.4f}"


def metrics_text(row: dict[str, Any], k: int) -> str:
    """The row's evaluation metrics (``""``: not an evaluation round)."""
    if _number(row.get("rmse")):
        return f"RMSE {row['rmse']:.4f}  MAE {row.get('mae', math.nan):.4f}"
    if _number(row.get(f"hr@{k}")):
        return f"HR@{k} {row[f'hr@{k}']:.4f}  NDCG@{k} {row.get(f'ndcg@{k}', math.nan):.4f}"
    return ""


def _evaluated(row: dict[str, Any], k: int) -> bool:
    return f"hr@{k}" in row or "rmse" in row


def progress_text(rows: list[dict[str, Any]], k: int) -> str:
    """The progress bar's text after ``rows``: the last round's training loss (or that the
    round was skipped, or trained nobody) and the last evaluation's metrics."""
    text = loss_text(rows[-1])
    evaluated = [r for r in rows if _evaluated(r, k)]
    if evaluated:
        text = "  ".join(part for part in (text, metrics_text(evaluated[-1], k)) if part)
    return text


def round_line(row: dict[str, Any], rounds: int, k: int) -> str:
    """One line for a finished round: ``round 3/20: 2 devices online, 2 replies, 41.2 s; loss
    0.4123; HR@10 0.1234  NDCG@10 0.0567`` (each part only when the row holds it)."""
    counts = []
    if _number(row.get("nodes_asked")):
        counts.append(f"{row['nodes_asked']} device{'s' if row['nodes_asked'] != 1 else ''} online")
    if _number(row.get("nodes")):
        counts.append(f"{row['nodes']} repl{'ies' if row['nodes'] != 1 else 'y'}")
    if _number(row.get("wall_seconds")):
        counts.append(f"{row['wall_seconds']:.1f} s")
    parts = [", ".join(counts), loss_text(row), metrics_text(row, k)]
    if _number(row.get("dp_refused")) and row["dp_refused"]:
        parts.append(f"{row['dp_refused']} update(s) refused (dp)")
    if _number(row.get("epsilon_max")):
        parts.append(f"ε {row['epsilon_max']:.3g}")
    details = "; ".join(part for part in parts if part)
    return f"round {row.get('round')}/{rounds}" + (f": {details}" if details else "")


# --- reading files that are being written --------------------------------------------------


def read_complete_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` being written: complete lines only (a line still being
    written, or one that is not a JSON object with a round, is left out); ``[]`` when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return []
    rows = []
    for line in text.split("\n")[:-1]:  # after the last newline: a line not yet complete
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and _number(row.get("round")):
            rows.append(row)
    return rows


class RunFollower:
    """Prints a run's progress from its ``metrics.jsonl`` and (optionally) its log, as they grow.

    Call :meth:`poll` now and then while the run goes, and once after it ended. Rounds
    already in ``metrics.jsonl`` when the follower starts (a resumed run) are not printed
    again; the divergence guard reads them all.
    """

    def __init__(self, metrics_path: Path, rounds: int, k: int, echo: Callable[[str], None],
                 warn: Callable[[str], None], log_path: Path | None = None, log_offset: int = 0) -> None:
        self.metrics_path = Path(metrics_path)
        self.rounds, self.k = rounds, k
        self.echo, self.warn = echo, warn
        self.log_path = None if log_path is None else Path(log_path)
        self.log_offset = log_offset
        self._partial = b""
        rows = read_complete_rows(self.metrics_path)
        self.shown = max((int(row["round"]) for row in rows), default=0)
        self.warned = False
        self._waiting: tuple[int, int] | None = None  # the last device count echoed

    def poll(self) -> None:
        """Print what the run wrote since the last poll."""
        for line in self._new_log_lines():
            self._device_line(line)
        rows = read_complete_rows(self.metrics_path)
        last = max((int(row["round"]) for row in rows), default=0)
        self.shown = min(self.shown, last)  # a resumed run dropped the rounds after its checkpoint
        new = False
        for row in rows:
            if int(row["round"]) > self.shown:
                self.echo(round_line(row, self.rounds, self.k))
                self.shown = int(row["round"])
                self._waiting = None
                new = True
        if new and not self.warned:
            message = divergence_warning(loss_series(rows))
            if message is not None:
                self.warn(message)
                self.warned = True

    def _device_line(self, line: str) -> None:
        if match := CONNECTED.search(line):
            self.echo(connected_line(int(match[1]), int(match[2])))
            self._waiting = None
            return
        match = WAITING.search(line) or FLOWER_WAITING.search(line)
        if match:
            state = (int(match[1]), int(match[2]))
            if state != self._waiting:
                self.echo(waiting_line(*state))
                self._waiting = state

    def _new_log_lines(self) -> list[str]:
        if self.log_path is None:
            return []
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(0, 2)
                if handle.tell() < self.log_offset:  # the log was replaced: read it from its start
                    self.log_offset, self._partial = 0, b""
                handle.seek(self.log_offset)
                data = handle.read()
        except OSError:
            return []
        self.log_offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [line.decode("utf-8", errors="replace") for line in lines]
