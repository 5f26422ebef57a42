"""Model selection by validation: the validation item's metrics, the selected row, the driver's
returned model, the summary, and the ncf-loo protocol preset."""

from __future__ import annotations

import math
from dataclasses import fields, replace

import numpy as np
import pytest

from fedrec.core.config.protocols import apply_protocol, protocol_settings
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.split import NO_ITEM, UserData
from fedrec.core.evaluation.protocols import evaluate_user
from fedrec.core.evaluation.selection import BestRound, selected_row
from fedrec.core.federation.driver import run_federation
from fedrec.core.run_files import build_summary

# --- evaluate_user(validation=True) ------------------------------------------------------------

N_ITEMS = 14
TRAIN, VALIDATION, TEST = np.array([0, 1]), 2, 3
NEGATIVES = np.arange(4, 12)  # 8 sampled items; items 12 and 13 are not sampled


def _user(validation_item: int = VALIDATION) -> UserData:
    return UserData(0, N_ITEMS, TRAIN, validation_item, TEST, NEGATIVES)


def _scores(validation_score: float, test_score: float) -> np.ndarray:
    scores = np.zeros(N_ITEMS, dtype=np.float32)
    scores[NEGATIVES] = np.arange(8, 0, -1)  # negatives score 8, 7, …, 1
    scores[TRAIN] = 100.0  # training items never count against a held-out item
    scores[12], scores[13] = 50.0, 40.0  # outside the sampled negatives: only full ranking sees them
    scores[VALIDATION], scores[TEST] = validation_score, test_score
    return scores


@pytest.mark.parametrize("validation_score, k, hr, ndcg", [
    (9.0, 3, 1.0, 1.0),  # above every negative: rank 0
    (5.5, 3, 0.0, 0.0),  # 8, 7, 6 above: rank 3, not in the top 3
    (5.5, 4, 1.0, 1 / math.log2(5)),  # rank 3 < 4: a hit at position 4
    (6.0, 4, 1.0, 1 / math.log2(4.5)),  # 8, 7 above and 6 tied: rank 2 + 1/2
    (0.5, 5, 0.0, 0.0),  # below every negative: rank 8
])
def test_validation_metrics_rank_the_validation_item_among_the_sampled_negatives(
        validation_score: float, k: int, hr: float, ndcg: float) -> None:
    metrics = evaluate_user(_scores(validation_score, 0.0), _user(), k, validation=True)
    assert metrics[f"val_hr@{k}"] == hr
    assert metrics[f"val_ndcg@{k}"] == pytest.approx(ndcg, abs=1e-12)


def test_validation_metrics_by_hand() -> None:
    metrics = evaluate_user(_scores(5.5, 7.5), _user(), 4, validation=True)
    # validation 5.5: negatives 8, 7, 6 above → rank 3 → a hit at position 4
    assert metrics["val_hr@4"] == 1.0 and metrics["val_ndcg@4"] == pytest.approx(1 / math.log2(5))
    # test 7.5: negative 8 above → rank 1 (the validation item is not a negative of the test item)
    assert metrics["hr@4"] == 1.0 and metrics["ndcg@4"] == pytest.approx(1 / math.log2(3))
    # full ranking of the test item: 50, 40 and 8 above (training and validation items removed) → rank 3
    assert metrics["full_hr@4"] == 1.0 and metrics["full_ndcg@4"] == pytest.approx(1 / math.log2(5))
    at_three = evaluate_user(_scores(5.5, 7.5), _user(), 3, validation=True)
    assert at_three["val_hr@3"] == 0.0 and at_three["val_ndcg@3"] == 0.0 and at_three["hr@3"] == 1.0
    # a tie with a negative counts half a place: 6.0 against 8, 7 above and 6 tied → rank 2.5
    tied = evaluate_user(_scores(6.0, 7.5), _user(), 3, validation=True)
    assert tied["val_hr@3"] == 1.0 and tied["val_ndcg@3"] == pytest.approx(1 / math.log2(4.5))


def test_validation_metrics_only_when_asked_and_the_test_metrics_do_not_change() -> None:
    scores = _scores(5.5, 7.5)
    without = evaluate_user(scores, _user(), 4)
    with_validation = evaluate_user(scores, _user(), 4, validation=True)
    assert not any(key.startswith("val_") for key in without)
    assert set(with_validation) - set(without) == {"val_hr@4", "val_ndcg@4"}
    assert all(with_validation[key] == value for key, value in without.items())


def test_a_user_without_a_validation_item_cannot_be_validated() -> None:
    user = _user(validation_item=NO_ITEM)
    scores = _scores(5.5, 7.5)
    assert "hr@4" in evaluate_user(scores, user, 4)
    with pytest.raises(ValueError, match="no validation item"):
        evaluate_user(scores, user, 4, validation=True)


# --- selected_row and BestRound -----------------------------------------------------------------

ROWS = [
    {"round": 1, "val_hr@10": 0.2, "hr@10": 0.10},
    {"round": 2, "train_loss": 0.5},  # not evaluated
    {"round": 3, "val_hr@10": 0.5, "hr@10": 0.30},
    {"round": 4, "val_hr@10": 0.5, "hr@10": 0.40},  # ties with round 3: the earliest wins
    {"round": 5, "hr@10": 0.90},  # no validation key: ignored by best-validation
    {"round": 6, "val_hr@10": 0.4, "hr@10": 0.60},
]


def test_last_picks_the_last_row_and_best_validation_the_earliest_best() -> None:
    assert selected_row(ROWS, "last", 10)["round"] == 6
    assert selected_row(ROWS, "best-validation", 10)["round"] == 3
    assert selected_row(ROWS[::-1], "best-validation", 10)["round"] == 4  # earliest in the given order
    assert selected_row([{"round": 1}, {"round": 2, "val_hr@10": 0.0}], "best-validation", 10)["round"] == 2
    assert selected_row([{"round": 1, "val_hr@10": 0.3}], "best-validation", 10)["round"] == 1


def test_selection_refuses_what_it_cannot_choose_from() -> None:
    with pytest.raises(ValueError, match="unknown model selection"):
        selected_row(ROWS, "best-test", 10)
    with pytest.raises(ValueError, match="no evaluated round"):
        selected_row([], "last", 10)
    with pytest.raises(ValueError, match="val_hr@5"):  # the key follows k
        selected_row(ROWS, "best-validation", 5)
    with pytest.raises(ValueError, match="unknown model selection"):
        BestRound("best", 10)


def test_best_round_records_strict_improvements_only() -> None:
    best = BestRound("best-validation", 10)
    assert best.round is None and best.value == float("-inf") and best.key == "val_hr@10"
    seen = [best.improves(row) for row in ROWS]
    assert seen == [True, False, True, False, False, False]
    assert best.round == 3 and best.value == 0.5
    assert best.improves({"round": 7, "val_hr@10": 0.0}) is False
    assert best.improves({"round": 8, "val_hr@10": 0.51}) is True and best.round == 8
    first_zero = BestRound("best-validation", 10)
    assert first_zero.improves({"round": 1, "val_hr@10": 0.0}) and first_zero.round == 1
    last = BestRound("last", 10)
    assert all(last.improves(row) for row in ROWS) and last.round == 6
    # agrees with selected_row on the same rows
    assert best.round == selected_row([*ROWS, {"round": 7, "val_hr@10": 0.0}, {"round": 8, "val_hr@10": 0.51}],
                                      "best-validation", 10)["round"]


# --- the driver returns the selected round's model ---------------------------------------------


def _expected_round(rows: list[dict]) -> int:
    """The round of the highest val_hr@10, the earliest on ties, worked out here."""
    values = [(row["val_hr@10"], -row["round"]) for row in rows if "val_hr@10" in row]
    return -max(values)[1]


@pytest.mark.parametrize("settings", [
    dict(dataset="synthetic-30", seed=0, lr=0.2),  # a strict best in the middle of the run
    dict(dataset="synthetic-16", seed=1, lr=0.2),  # the best at round 2, tied later: the earliest
    dict(dataset="synthetic-16", seed=2, model="gmf", personal="head+tune", lr=0.05),  # heads are locals too
])
def test_a_federated_run_returns_the_model_of_its_best_validation_round(settings: dict) -> None:
    config = RunConfig(**{**dict(model="mf", dim=8, rounds=5, clients_per_round=10, executor="cohort",
                                 client_optimizer="adam", local_epochs=1,  # the settings the cases were chosen with
                                 eval_every=1, model_selection="best-validation"), **settings})
    result = run_federation(config)
    assert len(result.rows) == 5 and all("val_hr@10" in row for row in result.rows)
    chosen = _expected_round(result.rows)
    assert result.selected_round == chosen
    assert 1 < chosen < 5, "the case should select neither the first nor the last round"
    # the same run stopped at the selected round, reporting its last round, has the same model
    stopped = run_federation(replace(config, rounds=chosen, model_selection="last"))
    assert stopped.selected_round == chosen
    assert set(stopped.arrays) == set(result.arrays)
    for name, value in stopped.arrays.items():
        np.testing.assert_allclose(result.arrays[name], value, rtol=0, atol=0)
    assert set(stopped.locals) == set(result.locals)
    for user, arrays in stopped.locals.items():
        for name, value in arrays.items():
            np.testing.assert_allclose(result.locals[user][name], value, rtol=0, atol=0)
    assert stopped.rows[-1]["hr@10"] == result.rows[chosen - 1]["hr@10"]
    assert "val_hr@10" not in stopped.rows[-1]  # model-selection last does not validate
    # and it is not the model of the last round
    final = run_federation(replace(config, model_selection="last"))
    assert final.selected_round == 5
    assert any(not np.array_equal(final.arrays[name], result.arrays[name]) for name in result.arrays)


# --- the summary -----------------------------------------------------------------------------


def test_the_summary_reports_the_selected_round() -> None:
    summary = build_summary(ROWS, 10, None, {}, 0.0, model_selection="best-validation")
    assert summary["hr@10"] == 0.30 and summary["val_hr@10"] == 0.5
    assert summary["evaluated_at"] == 3 and summary["rounds"] == 6
    assert summary["model_selection"] == "best-validation"
    last = build_summary(ROWS, 10, None, {}, 0.0)
    assert last["hr@10"] == 0.60 and last["evaluated_at"] == 6 and last["model_selection"] == "last"


# --- the ncf-loo protocol --------------------------------------------------------------------


def test_ncf_loo_sets_the_papers_settings_and_every_user_each_round() -> None:
    config = RunConfig(protocol="ncf-loo", lr=0.01, seed=7, personal="tune", server_lr=3.0)
    applied = apply_protocol(config, 943)
    expected = dict(rounds=100, local_epochs=1, dim=32, negatives=4, eval_every=1, eval_k=10, eval_negatives=99,
                    eval_fraction=1.0, model_selection="best-validation", clients_per_round=943)
    assert {key: getattr(applied, key) for key in expected} == expected
    changed = {f.name for f in fields(RunConfig) if getattr(applied, f.name) != getattr(config, f.name)}
    assert changed <= set(expected)
    assert (applied.lr, applied.seed, applied.personal, applied.server_lr) == (0.01, 7, "tune", 3.0)
    assert applied.evaluation.validation
    assert apply_protocol(applied, 943) is applied  # already applied: unchanged
    assert apply_protocol(config, 50).clients_per_round == 50
    with pytest.raises(ValueError, match="n_users"):
        protocol_settings("ncf-loo", 0)


def test_protocol_none_returns_the_config_unchanged() -> None:
    config = RunConfig(rounds=3, dim=8, clients_per_round=4, model_selection="last")
    assert apply_protocol(config, 943) is config
    assert protocol_settings("none", 0) == {}
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_settings("ncf", 10)
