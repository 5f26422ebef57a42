"""The server's push-then-poll exchange with the nodes."""

from __future__ import annotations

import time
from types import SimpleNamespace

from fedrec.server.loop import send_and_receive


class _FakeGrid:
    """Replies to message ``i`` become available ``delays[i]`` seconds after the push."""

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays
        self.pushed_at = 0.0
        self.pulls = 0

    def push_messages(self, messages):
        self.pushed_at = time.monotonic()
        return [f"m{i}" for i in range(len(messages))]

    def pull_messages(self, message_ids):
        self.pulls += 1
        now = time.monotonic() - self.pushed_at
        ready = [i for i, d in enumerate(self.delays) if f"m{i}" in message_ids and d <= now]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=f"m{i}"), index=i) for i in ready]


def test_collects_every_reply_polling_every_10_ms(monkeypatch) -> None:
    from fedrec.server import loop

    sleeps: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(loop.time, "sleep", lambda s: (sleeps.append(s), real_sleep(s)))
    grid = _FakeGrid([0.0, 0.05, 0.12])
    replies = send_and_receive(grid, ["a", "b", "c"], timeout=5.0)
    assert sorted(r.index for r in replies) == [0, 1, 2]
    # Flower's own loop sleeps 0.1 s (3 s over gRPC) between pulls; ours waits 10 ms
    assert sleeps and set(sleeps) == {loop.POLL_INTERVAL_S} and loop.POLL_INTERVAL_S == 0.01
    assert grid.pulls == len(sleeps) + 1


def test_returns_what_arrived_when_the_timeout_passes() -> None:
    grid = _FakeGrid([0.0, 10.0])
    started = time.monotonic()
    replies = send_and_receive(grid, ["a", "b"], timeout=0.2)
    assert [r.index for r in replies] == [0]
    assert time.monotonic() - started < 1.0
