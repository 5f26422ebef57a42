"""The divergence guard: a training loss that keeps rising is named, with its likely cause."""

from __future__ import annotations

import math
import random

import pytest

from fedrec.core.evaluation.divergence import MIN_ROUNDS, divergence_warning, loss_series


def numbered(losses: list[float], first: int = 1) -> list[tuple[int, float]]:
    return list(enumerate(losses, start=first))


def first_warning(losses: list[float]) -> int | None:
    """The number of rounds after which the guard, asked after every round, first warns."""
    return next((n for n in range(1, len(losses) + 1) if divergence_warning(numbered(losses[:n]))), None)


def test_a_rising_loss_warns_naming_both_rounds_and_the_learning_rates() -> None:
    losses = [0.69, 0.52, 0.41, 0.37, 0.36, 0.39, 0.45, 0.55, 0.68, 0.84]
    message = divergence_warning(numbered(losses))
    assert message is not None
    # medians of 3 rounds: a real round's loss, which one lucky or unlucky round cannot set
    assert message.startswith("the training loss rose from 0.37 (round 4) to 0.68 (round 9): ")
    assert "--lr" in message and "--server-lr" in message and "too large" in message


def test_a_steady_rise_by_a_third_warns_though_below_half_again() -> None:
    losses = [0.6, 0.5, 0.45, 0.42, 0.4, 0.4, 0.42, 0.45, 0.48, 0.52, 0.56]
    message = divergence_warning(numbered(losses))
    assert message is not None and "from 0.4 (round" in message and "to 0.52 (round 10)" in message
    assert 0.52 / 0.4 < 1.5


def test_a_noisy_rise_warns_within_a_few_rounds_of_its_start() -> None:
    rng = random.Random(3)
    for _ in range(20):  # 0.69 falls to 0.36 by round 6, then climbs to 0.84 by round 26; ±20 % per round
        curve = [(0.69 - 0.066 * r if r < 5 else 0.36 + 0.024 * (r - 5)) * (1 + rng.uniform(-0.2, 0.2))
                 for r in range(30)]
        when = first_warning(curve)
        assert when is not None and when <= 26, curve


def test_a_noisy_but_falling_loss_does_not_warn() -> None:
    losses = [0.70, 0.60, 0.66, 0.50, 0.57, 0.45, 0.52, 0.41, 0.47, 0.38, 0.44, 0.36, 0.40, 0.35]
    assert first_warning(losses) is None
    rng = random.Random(0)
    for _ in range(30):  # falling, then level, with ±20 % noise per round, judged after every round
        curve = [(0.3 + 0.4 * 0.95 ** r) * (1 + rng.uniform(-0.2, 0.2)) for r in range(80)]
        assert first_warning(curve) is None, curve


def test_a_single_spike_does_not_warn() -> None:
    assert first_warning([0.7, 0.6, 0.5, 0.45, 0.42, 0.40, 1.9, 0.39, 0.38, 0.37]) is None


def test_too_few_rounds_do_not_warn() -> None:
    assert divergence_warning([]) is None
    rising = [0.3, 0.5, 0.8, 1.3, 2.1, 3.4, 5.5]
    assert divergence_warning(numbered(rising[:MIN_ROUNDS - 1])) is None
    assert divergence_warning(numbered(rising[:MIN_ROUNDS])) is not None


def test_a_nan_or_infinite_loss_warns_at_once() -> None:
    message = divergence_warning(numbered([0.7, 0.5, math.nan]))
    assert message is not None and message.startswith("the training loss became nan in round 3 (it was 0.5 in round 2)")
    assert "--lr" in message
    assert "became inf in round 1:" in (divergence_warning(numbered([math.inf])) or "")


def test_losses_come_from_rows_that_report_one() -> None:
    rows = [{"round": 1, "train_loss": 0.5}, {"round": 2, "train_loss": None},
            {"round": 3, "train_loss": 0.1, "skipped": True}, {"round": 4, "train_loss": float("nan")},
            {"round": 5}, {"round": 6, "train_loss": "x"}, {"round": 7, "train_loss": 0.4}]
    series = loss_series(rows)
    assert [step for step, _ in series] == [1, 4, 7]
    assert math.isnan(series[1][1])


def test_dp_rows_carry_no_loss_and_the_guard_stays_silent() -> None:
    # what metrics.jsonl holds under a DP mode: no train_loss at all
    rows = [{"round": r, "ledger_rows": r, "ledger_head": "ab", "dp_refused": 0, "epsilon_max": 0.1 * r,
             "hr@10": 0.01 * r} for r in range(1, 30)]
    assert loss_series(rows) == []
    assert divergence_warning(loss_series(rows)) is None


@pytest.mark.parametrize("losses", [[0.0] * 8, [0.2, 0.1, 0.0, 0.0, 0.0, 0.0, 0.01, 0.02, 0.03]])
def test_a_loss_at_zero_does_not_divide_by_zero(losses: list[float]) -> None:
    assert first_warning(losses) is None
