"""A training loss that keeps rising: the divergence warning of ``fedrec simulate`` and
``fedrec server run``.

:func:`divergence_warning` reads the per-round ``train_loss`` of ``metrics.jsonl``'s rows and
returns one sentence when training looks divergent, else ``None``. Pure: no files, no output.

Per-round training losses are noisy (each round trains other users), so the rounds are
judged by the median loss of windows of ``W`` rounds (``W``: 3, or a fifth of the rounds so
far), which a single unlucky round cannot move. A warning needs at least
:data:`MIN_ROUNDS` rounds with a loss, and the last window's median at least

* :data:`LARGE_RISE` × the lowest median of an earlier window (windows ``W/2`` rounds
  apart, none overlapping the last), or
* :data:`SUSTAINED_RISE` × that lowest median when the medians rose :data:`RISING_STEPS`
  times in a row (windows ``W/2`` rounds apart),

each factor raised by 3σ/√W, σ being one round's relative noise (estimated from the
losses' second differences: a steady trend does not count as noise). Simulated with ±20 %
uniform noise per round and the guard asked after every round of 100: a level loss warned
in 1 run of 200, a falling one in none; 0.36 rising to 0.84 over 20 rounds warned in all
200, after about 12 rounds of rise.

A loss that is not finite (nan, inf) is reported at once, however few rounds ran. Rows
without a loss (skipped rounds, rounds that trained nobody, or a DP run's shared rows,
which carry no loss at all) are not judged: a DP run's guard stays silent.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

MIN_ROUNDS = 6  # rounds with a finite loss before a rise is judged
MIN_WINDOW = 3  # rounds per median (at least; a fifth of the rounds when more)
RISING_STEPS = 3
SUSTAINED_RISE = 1.25
LARGE_RISE = 1.5
NOISE_MARGIN = 3.0  # each factor is raised by NOISE_MARGIN·σ/√W (σ: one round's relative noise)
LIKELY_CAUSE = ("the client learning rate (--lr) or the server's step (--server-lr) is likely too large "
                "for this data")


def loss_series(rows: Iterable[Mapping[str, Any]]) -> list[tuple[int, float]]:
    """``(round, train_loss)`` of the rows that report a training loss (skipped rounds left out);
    a value that is no number, or not finite, is kept as ``nan``/``inf`` for the guard to report."""
    series = []
    for row in rows:
        loss = row.get("train_loss")
        if loss is None or row.get("skipped") or isinstance(loss, bool):
            continue
        try:
            value = float(loss)
            step = int(row["round"])
        except (TypeError, ValueError, KeyError):
            continue
        series.append((step, value))
    return series


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def divergence_warning(series: Iterable[tuple[int, float]]) -> str | None:
    """One sentence naming the rise and its likely cause when the losses ``(round, loss)``, in
    round order, look divergent; ``None`` otherwise (also when there are too few)."""
    finite: list[tuple[int, float]] = []
    for step, loss in series:
        if not math.isfinite(loss):
            before = f" (it was {_fmt(finite[-1][1])} in round {finite[-1][0]})" if finite else ""
            return f"the training loss became {loss} in round {step}{before}: {LIKELY_CAUSE}"
        finite.append((step, loss))
    n = len(finite)
    if n < MIN_ROUNDS:
        return None
    width = max(MIN_WINDOW, n // 5)
    step = max(1, width // 2)  # windows half a window apart
    earlier = range(n - 1 - width, width - 2, -step)  # ends of the windows that do not overlap the last one
    if not earlier:
        return None
    last = _median_round(finite, n - 1, width)
    best = min((_median_round(finite, end, width) for end in earlier), key=lambda p: p[1])
    if best[1] <= 0:
        return None  # a loss of 0 (or below) cannot rise by a factor
    ratio = last[1] / best[1]
    margin = NOISE_MARGIN * _relative_noise([loss for _, loss in finite]) / math.sqrt(width)
    ends = [n - 1 - j * step for j in range(RISING_STEPS, -1, -1)]
    rising = ends[0] >= width - 1 and all(
        _median_round(finite, a, width)[1] < _median_round(finite, b, width)[1] for a, b in zip(ends, ends[1:]))
    if ratio >= LARGE_RISE + margin or (rising and ratio >= SUSTAINED_RISE + margin):
        return (f"the training loss rose from {_fmt(best[1])} (round {best[0]}) to {_fmt(last[1])} "
                f"(round {last[0]}): {LIKELY_CAUSE}")
    return None


def _median_round(points: list[tuple[int, float]], end: int, width: int) -> tuple[int, float]:
    """The round (and its loss) whose loss is the median of the ``width`` rounds ending at index ``end``."""
    return sorted(points[end - width + 1:end + 1], key=lambda p: p[1])[width // 2]


def _relative_noise(losses: list[float]) -> float:
    """A robust estimate of one round's relative noise: the median of ``|l[i+1] - 2 l[i] + l[i-1]| / l[i]``
    (a straight trend gives 0) over its value for unit-variance Gaussian noise, 0.6745·√6."""
    second = [abs(c - 2 * b + a) / b for a, b, c in zip(losses, losses[1:], losses[2:]) if b > 0]
    return statistics.median(second) / (0.6745 * math.sqrt(6)) if second else 0.0
