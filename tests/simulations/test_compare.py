"""``fedrec compare`` (the package :mod:`fedrec.simulations.compare`, its report in
:mod:`fedrec.simulations.compare.report`): the report on hand-made rows, the scorers against
slow references, the federated rows against the round driver's own evaluation and the
one-shot item-kNN, the cold-start split, a small end-to-end comparison, and rows that fail
or cannot run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.core.baselines import ItemPop
from fedrec.core.baselines.federated_itemknn import contribution_bound, release_noise, run_federated_itemknn, score_user
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import NO_ITEM, leave_one_out
from fedrec.core.evaluation.protocols import evaluate_user, mean_metrics
from fedrec.core.federation.driver import run_federation
from fedrec.core.recommend.reranking import mmr_rerank, top_k
from fedrec.simulations import compare
from fedrec.simulations.compare import (
    Budget,
    ColdStartSplit,
    CompareConfig,
    MMRScorer,
    ModelRows,
    NotAvailable,
    SimilarityScorer,
    federated_model,
    make_cold_start_split,
    new_item_metrics,
    round_bytes,
    run_compare,
    subsample_users,
)
from fedrec.simulations.compare.report import (
    CENTRAL,
    CHART_FILE,
    FEDERATED,
    JSON_FILE,
    MARKDOWN_FILE,
    human_bytes,
    sort_rows,
    write_report,
)

TINY = Budget(max_users=150, central_epochs=1, bpr_epochs=1, rounds=2, clients_per_round=20, local_epochs=1,
              dp_rounds=1, sequence_epochs=1, sequence_rounds=1, sequence_clients=10, sequence_local_epochs=1,
              rating_epochs=1, rating_rounds=1, rating_clients=20)


@pytest.fixture(scope="module")
def small_split():
    return leave_one_out(subsample_users(load_dataset("synthetic", "", 0), 150, 0), 0)


# --------------------------------------------------------------------------- the report


def hand_row(model: str, family: str, setting: str, **metrics: float) -> dict:
    return {"model": model, "family": family, "setting": setting, "status": "ok", "reason": "",
            "metrics": metrics, "wall_seconds": 12.34, "train_seconds": 10.0,
            "bytes_sent": 4_438_425_600 if setting == FEDERATED else 0, "details": f"{model} ran", "info": {}}


HAND_ROWS = [
    hand_row("mf", "matrix factorisation", FEDERATED, **{"hr@10": 0.6123, "ndcg@10": 0.35, "full_hr@10": 0.1,
                                                          "precision@10": 0.01, "recall@10": 0.1, "mrr@10": 0.04,
                                                          "coverage@10": 0.25, "diversity@10": 0.5,
                                                          "novelty@10": 2.0}),
    hand_row("explicit-mf", "explicit rating", CENTRAL, rmse=0.9234, mae=0.7251),
    hand_row("mf", "matrix factorisation", CENTRAL, **{"hr@10": 0.6381, "coverage@10": 0.2}),
    {**hand_row("user-knn", "neighbourhood", FEDERATED), "status": "not available", "reason": "no federated form"},
    hand_row("itempop", "popularity", CENTRAL, **{"hr@10": 0.397, "full_hr@10": 0.086, "coverage@10": 0.054}),
]
HAND_COLD = [hand_row("hybrid", "feature-based", CENTRAL, **{"cold_users_hr@10": 0.41, "new_item_auc": 0.7123,
                                                             "new_item_random_recall@10": 0.118})]


def test_report_on_hand_made_rows(tmp_path: Path) -> None:
    meta = {"dataset": "ml-100k", "k": 10, "data": "ml-100k: 943 users", "wall_seconds": 61.0,
            "cold_start": {"max_train_items": 5, "cold_users": 90, "new_items": 85, "description": "cold split"}}
    write_report(meta, HAND_ROWS, HAND_COLD, tmp_path)

    document = json.loads((tmp_path / JSON_FILE).read_text())
    assert set(document) == {"meta", "rows", "cold_start"}
    assert document["cold_start"]["settings"]["new_items"] == 85
    assert document["rows"] == HAND_ROWS and document["cold_start"]["rows"] == HAND_COLD
    for row in document["rows"]:
        assert {"model", "setting", "status", "metrics", "wall_seconds", "bytes_sent"} <= set(row)

    text = (tmp_path / MARKDOWN_FILE).read_text()
    header = ("| model | setting | HR@10 | NDCG@10 | full HR@10 | P@10 | R@10 | MRR@10 | coverage | diversity | "
              "novelty | RMSE | MAE | seconds | bytes |")
    assert header in text
    assert "| mf | federated | 0.612 | 0.350 | 0.100 | 0.0100 | 0.100 | 0.040 | 0.250 | 0.500 | 2.00 | — | — " \
           "| 12.3 | 4.44 GB |" in text
    assert "| explicit-mf | central | — | — | — | — | — | — | — | — | — | 0.923 | 0.725 | 12.3 | 0 |" in text
    assert "| user-knn | federated | not available | —" in text
    assert "- user-knn · federated — not available: no federated form" in text
    table = text[text.index(header):text.index("## Cold start")]
    order = [table.index(f"| {m} | {s} |") for m, s in (("itempop", CENTRAL), ("user-knn", FEDERATED),
                                                          ("mf", CENTRAL), ("mf", FEDERATED),
                                                          ("explicit-mf", CENTRAL))]
    assert order == sorted(order)  # by family, then setting
    assert "| hybrid | central | 0.410 |" in text and "| hybrid | central | 0.712 |" in text  # both cold tables
    assert "- **mf · federated**: mf ran" in text

    png = (tmp_path / CHART_FILE).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_rows_sort_by_family_then_model_then_setting() -> None:
    ordered = [(r["model"], r["setting"]) for r in sort_rows(HAND_ROWS)]
    assert ordered == [("itempop", CENTRAL), ("user-knn", FEDERATED), ("mf", CENTRAL), ("mf", FEDERATED),
                       ("explicit-mf", CENTRAL)]


def test_human_bytes() -> None:
    assert [human_bytes(v) for v in (0, 999, 1000, 221_440, 4_438_425_600, None)] == \
        ["0", "999 B", "1 kB", "221 kB", "4.44 GB", "—"]


# --------------------------------------------------------------------------- scorers against references


def test_similarity_scorer_is_score_user_for_every_user(small_split) -> None:
    rng = np.random.default_rng(0)
    shape = (small_split.n_items, small_split.n_items)
    similarity = rng.random(shape) * (rng.random(shape) < 0.05)
    scorer = SimilarityScorer(similarity).fit(small_split)
    users = np.array([0, 3, 17], dtype=np.int64)
    expected = np.stack([score_user(similarity, small_split.train_items_of(int(u))) for u in users])
    np.testing.assert_allclose(scorer.score_users(users), expected, rtol=1e-6)


def test_mmr_scorer_puts_the_mmr_list_on_top(small_split) -> None:
    base = ItemPop().fit(small_split)
    vectors = np.random.default_rng(1).normal(size=(small_split.n_items, 4))
    scorer = MMRScorer(base, vectors, k=10, lam=0.5, pool=50).fit(small_split)
    users = np.array([2, 5], dtype=np.int64)
    for u, scores in zip(users, scorer.score_users(users)):
        excluded = small_split.user_data(int(u)).excluded_from_ranking()
        expected = mmr_rerank(base.score_users(np.array([u]))[0], vectors, 10, 0.5, pool=50, exclude=excluded)
        np.testing.assert_array_equal(top_k(scores, 10, exclude=excluded), expected)


def test_the_federated_scorer_agrees_with_the_drivers_own_evaluation(small_split) -> None:
    """One evaluation: scoring the driver's final model per user gives the driver's own HR/NDCG."""
    config = RunConfig(dataset="synthetic", model="mf", rounds=2, clients_per_round=15, eval_every=2,
                       client_optimizer="sgd", lr=2.0)
    reference = run_federation(config, small_split).rows[-1]
    scorer, result = federated_model(small_split, config, threads=1)
    assert all("hr@10" not in row for row in result.rows)  # trained without evaluation rounds
    users = small_split.evaluated_users()
    scores = scorer.score_users(users)
    ours = mean_metrics([evaluate_user(scores[j], small_split.user_data(int(u)), 10) for j, u in enumerate(users)])
    for key in ("hr@10", "ndcg@10", "full_hr@10"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-9), key
    size = sum(v.nbytes for v in scorer.arrays.values())
    assert size == (small_split.n_items * 32 + small_split.n_items) * 4  # MF: item table and biases, float32
    assert round_bytes(scorer.arrays, [r["clients"] for r in result.rows]) == 2 * size * 15 * 2


def small_context(split, **config) -> compare.Context:
    data = subsample_users(load_dataset("synthetic", "", 0), 150, 0)
    return compare.Context(CompareConfig(dataset="synthetic", budget=TINY, **config), data, split, None)


def test_the_federated_item_knn_rows_release_the_one_shot_similarity(small_split) -> None:
    ctx = small_context(small_split)
    plain = compare.MODELS["item-knn"].rows[FEDERATED](ctx)
    expected = run_federated_itemknn(small_split, 60, 20, 10.0, seed=0)
    np.testing.assert_array_equal(plain.scorer.similarity.toarray(), expected.similarity)
    assert "without noise" in plain.details and plain.info == {}

    private = compare.MODELS["item-knn"].rows["federated + DP"](ctx)
    sigma = release_noise(8.0, 1e-5)
    assert private.info["noise_multiplier"] == pytest.approx(sigma, rel=5e-3)  # the whole ε for the release
    assert 0.98 * 8.0 <= private.info["epsilon_spent"] <= 8.0 + 1e-6
    assert f"shrink = 1000·σ·C = {1000 * private.info['noise_multiplier'] * contribution_bound(60):.3g}" \
        in private.details
    assert "no evaluation is released" in private.details
    assert private.scorer.similarity.shape == (small_split.n_items, small_split.n_items)


def test_the_federated_sequence_row_scores_the_drivers_final_arrays(small_split) -> None:
    ctx = small_context(small_split)
    trained = compare.MODELS["sequence"].rows[FEDERATED](ctx)
    config = RunConfig(dataset="synthetic", model="sasrec", dim=32, seq_max_len=50, client_optimizer="adam", lr=0.01,
                       batch_size=8,
                       negatives=1, rounds=TINY.sequence_rounds, clients_per_round=TINY.sequence_clients,
                       local_epochs=TINY.sequence_local_epochs, server_lr=10.0, eval_every=TINY.sequence_rounds)
    reference = run_federation(config, small_split).rows[-1]  # the driver's own evaluation
    users = small_split.evaluated_users()
    scores = trained.scorer.score_users(users)
    ours = mean_metrics([evaluate_user(scores[j], small_split.user_data(int(u)), 10) for j, u in enumerate(users)])
    for key in ("hr@10", "ndcg@10"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-6), key
    assert trained.details.startswith("run_federation, model sasrec")


# --------------------------------------------------------------------------- cold start


def test_cold_start_split(small_split) -> None:
    cold = make_cold_start_split(small_split, max_train_items=5, user_fraction=0.1, item_fraction=0.05, seed=0)
    s = cold.split
    assert len(cold.new_items) == int(np.ceil(0.05 * small_split.n_items))
    assert not np.isin(s.train_items, cold.new_items).any()  # never in training
    held = np.concatenate([small_split.validation_item, small_split.test_item])
    assert not np.isin(cold.new_items, held[held != NO_ITEM]).any()
    np.testing.assert_array_equal(s.validation_item, small_split.validation_item)
    np.testing.assert_array_equal(s.test_item, small_split.test_item)
    sizes = np.diff(s.train_indptr)
    assert np.all(sizes[cold.cold_users] <= 5) and np.all(sizes[cold.warm_users] > 5)
    assert len(cold.cold_users) >= round(0.1 * len(small_split.evaluated_users()))
    for u in cold.cold_users:  # a cut user keeps its latest items, in order
        kept = [i for i in small_split.train_items_of(int(u)) if i not in set(cold.new_items)]
        np.testing.assert_array_equal(s.train_items_of(int(u)), kept[-len(s.train_items_of(int(u))):])
    for u, truth in zip(cold.new_item_users, cold.new_item_truth):
        original = small_split.train_items_of(int(u))
        np.testing.assert_array_equal(truth, np.intersect1d(original, cold.new_items))


class FixedScorer:
    """Scores from a table, for hand-worked metrics."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    def fit(self, split):
        return self

    def score_users(self, users):
        return self.table[users]


def test_new_item_metrics_by_hand(small_split) -> None:
    # 4 new items (ids 10..13); user 0 held items 11 and 13, user 1 held item 10.
    cold = ColdStartSplit(small_split, np.array([], np.int64), np.array([], np.int64), np.array([10, 11, 12, 13]),
                          np.array([0, 1]), [np.array([11, 13]), np.array([10])], 5)
    table = np.zeros((2, small_split.n_items), dtype=np.float32)
    # user 0: held 11 beats 10 and 12, held 13 ties 12 and beats 10 → AUC (1 + 1 + 0.5 + 1) / 4
    table[0, [10, 11, 12, 13]] = [0.1, 0.9, 0.5, 0.5]
    table[1, [10, 11, 12, 13]] = [0.2, 0.3, 0.3, 0.4]  # held 10 is last → AUC 0
    metrics = new_item_metrics(FixedScorer(table), cold, k=1)
    assert metrics["new_item_auc"] == pytest.approx((3.5 / 4 + 0.0) / 2)
    assert metrics["new_item_hr@1"] == pytest.approx(0.5)  # user 0's top item is 11, user 1's is 13
    assert metrics["new_item_recall@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert metrics["new_item_random_recall@1"] == pytest.approx(0.25)


def test_subsample_keeps_every_interaction_of_the_chosen_users() -> None:
    data = load_dataset("synthetic", "", 0)
    small = subsample_users(data, 100, 0)
    assert small.n_users == 100 and small.n_items == data.n_items
    np.testing.assert_array_equal(small.item_ids, data.item_ids)
    raw = {str(u): n for u, n in zip(*np.unique(data.user_ids[data.users], return_counts=True))}
    kept = {str(u): n for u, n in zip(*np.unique(small.user_ids[small.users], return_counts=True))}
    assert all(raw[u] == n for u, n in kept.items()) and len(kept) == 100
    assert subsample_users(data, 0, 0) is data


# --------------------------------------------------------------------------- end to end


def test_a_small_comparison_on_synthetic(tmp_path: Path) -> None:
    lines: list[str] = []
    config = CompareConfig(dataset="synthetic", models=("itempop", "item-knn", "mf"), budget=TINY)
    result = run_compare(config, tmp_path, progress=lines.append)
    settings = [(r["model"], r["setting"]) for r in result.rows]
    assert settings == [("itempop", "central"), ("itempop", "federated"), ("item-knn", "central"),
                        ("item-knn", "federated"), ("item-knn", "federated + DP"), ("mf", "central"),
                        ("mf", "central + MMR"), ("mf", "federated"), ("mf", "federated + DP")]
    assert all(r["status"] == "ok" for r in result.rows + result.cold_rows), \
        [(r["model"], r["reason"]) for r in result.rows if r["status"] != "ok"]
    by = {(r["model"], r["setting"]): r for r in result.rows}
    assert by[("itempop", "central")]["metrics"] == by[("itempop", "federated")]["metrics"]
    for row in result.rows:
        assert {"hr@10", "full_hr@10", "precision@10", "mrr@10", "coverage@10", "diversity@10",
                "novelty@10"} <= set(row["metrics"])
        assert (row["bytes_sent"] == 0) == (row["setting"].startswith("central"))
    assert by[("mf", "federated + DP")]["info"]["epsilon_spent"] <= 8.0 + 1e-6
    assert [(r["model"], r["setting"]) for r in result.cold_rows] == [
        ("itempop", "central"), ("item-knn", "central"), ("mf", "central"), ("mf", "federated")]
    assert {"cold_users_hr@10", "warm_users_hr@10", "new_item_auc"} <= set(result.cold_rows[0]["metrics"])
    assert result.cold_rows[0]["metrics"]["new_item_auc"] == pytest.approx(0.5)  # ItemPop: all new items tie at 0
    assert len([line for line in lines if line.startswith("[")]) == 2 * (len(result.rows) + len(result.cold_rows))
    document = json.loads((tmp_path / JSON_FILE).read_text())
    assert len(document["rows"]) == 9 and document["meta"]["n_users"] == 150
    assert (tmp_path / CHART_FILE).is_file() and "## Cold start" in (tmp_path / MARKDOWN_FILE).read_text()


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown model\(s\) 'nope' for fedrec compare: choose from itempop"):
        CompareConfig(models=("mf", "nope"))
    outcome = CliRunner().invoke(app, ["compare", "--models", "mf,nope", "--out", str(tmp_path / "c")])
    assert outcome.exit_code == 2
    assert "unknown model(s) 'nope'" in outcome.output and not (tmp_path / "c").exists()


def test_a_failing_row_is_recorded_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx):
        raise RuntimeError("the model diverged")

    def missing(ctx):
        raise NotAvailable("not in this checkout")

    rows = ModelRows("matrix factorisation", {CENTRAL: broken, FEDERATED: missing})
    monkeypatch.setitem(compare.MODELS, "mf", rows)
    config = CompareConfig(dataset="synthetic", models=("mf", "itempop"), budget=replace(TINY, cold_start=False))
    result = run_compare(config, tmp_path, progress=lambda line: None)
    status = {(r["model"], r["setting"]): (r["status"], r["reason"]) for r in result.rows}
    assert status[("mf", CENTRAL)] == ("failed", "RuntimeError: the model diverged")
    assert status[("mf", FEDERATED)] == ("not available", "not in this checkout")
    assert status[("itempop", CENTRAL)][0] == "ok" and status[("itempop", FEDERATED)][0] == "ok"
    text = (tmp_path / MARKDOWN_FILE).read_text()
    assert "- mf · central — failed: RuntimeError: the model diverged" in text
    assert "the model diverged" in json.loads((tmp_path / JSON_FILE).read_text())["rows"][0]["info"]["traceback"]


def test_the_federated_rating_row_reports_the_drivers_last_round(small_split) -> None:
    from fedrec.core.training.ratings import holdout_ratings

    ctx = small_context(small_split)
    row = compare.run_row(ctx, "explicit-mf", FEDERATED)
    assert row["status"] == "ok", row["reason"]
    config = RunConfig(dataset="synthetic", model="explicit-mf", dim=16, client_optimizer="adam", lr=0.02,
                       batch_size=32, weight_decay=0.05,
                       local_epochs=2, user_epochs=1, server_lr=10.0, reconstruct_epochs=3,
                       rounds=TINY.rating_rounds, clients_per_round=TINY.rating_clients, eval_every=TINY.rating_rounds)
    expected = run_federation(config, holdout_ratings(ctx.data, 0.1, 0)).rows[-1]
    assert row["metrics"] == {"rmse": pytest.approx(expected["rmse"]), "mae": pytest.approx(expected["mae"])}
    assert row["bytes_sent"] > 0 and "explicit-mf" in row["details"]
