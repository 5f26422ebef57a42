"""``fedrec compare``: every recommender family on one split, centrally and federated.

One leave-one-out split of the dataset (optionally a seeded subsample of its users, for
``--quick``) is shared by every ranking row; each row is one model × setting:

* ``central`` — the model trained in one place (:mod:`~fedrec.simulations.compare.central_rows`):
  the baselines of :mod:`fedrec.core.baselines`, the registry models through
  :func:`fedrec.core.training.central.train_central`, the sequence model through
  :func:`fedrec.core.training.sequence.train_sequence_central`, explicit MF through
  :func:`fedrec.core.training.ratings.train_rating_central`;
* ``federated`` — the same model trained without any user's data leaving its client
  (:mod:`~fedrec.simulations.compare.federated_rows`): every one of them (registry models,
  ``sasrec``, ``explicit-mf``, ``item-knn``) through the one round driver,
  :func:`fedrec.core.federation.driver.run_federation` (the per-user arithmetic and
  aggregation of the Flower apps, in one process, no Flower), scored from the final state
  it returns; ItemPop by its exact count sum;
* ``federated + DP`` — user-level DP at one ε (``user-central``: server noise on the clipped
  sum over rounds for MF, one noisy release of the summed shares for item-kNN);
* ``central + MMR`` — the central MF's lists re-ranked by MMR (λ = 0.5).

Every ranking row is scored by the one evaluation,
:func:`fedrec.core.baselines.evaluate_scorer` (sampled and full HR/NDCG, P/R/F1/MRR,
coverage, diversity, novelty); a federated model is scored per user as its client
scores it (:func:`fedrec.core.training.local_round.user_scores`: the user's vector fitted on its
own items with the global part frozen). Explicit MF predicts stars on its own per-user
rating hold-out (:func:`fedrec.core.training.ratings.holdout_ratings`) and reports RMSE/MAE.

``bytes_sent`` is the traffic of training, counted from the arrays that travel:
``Σ_rounds clients_r × 2 × |global part|`` (the global part down, an update of the
same size up, float32) for round-based training; shares up and the released similarity
down for item-kNN; 0 for central rows. The final evaluation's download of the global
part (one per evaluated user) is not included.

A row that cannot run records ``not available: <reason>``; a row that raises records
``failed: <error>``; neither stops the comparison. A cold-start section trains a few
models again on a second split with simulated cold users and held-out new items
(:func:`~fedrec.simulations.compare.cold_start.make_cold_start_split`).

    fedrec compare --dataset ml-100k --data-dir DIR --quick --out runs/compare
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from fedrec.core.baselines import evaluate_scorer
from fedrec.core.data.interactions import Interactions
from fedrec.core.data.item_features import dataset_item_features, has_item_features
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import LeaveOneOutSplit, leave_one_out
from fedrec.simulations.compare.cold_start import ColdStartSplit, make_cold_start_split, new_item_metrics
from fedrec.simulations.compare.config import RATING_TEST_FRACTION, SUBSAMPLE_STREAM, CompareConfig
from fedrec.simulations.compare.context import Context, NotAvailable, Progress
from fedrec.simulations.compare.models import COLD_START_ROWS, MODELS
from fedrec.simulations.compare.report import STATUS_FAILED, STATUS_NOT_AVAILABLE, STATUS_OK, write_report


@dataclass
class CompareResult:
    meta: dict[str, Any]
    rows: list[dict[str, Any]]
    cold_rows: list[dict[str, Any]]


def subsample_users(data: Interactions, max_users: int, seed: int) -> Interactions:
    """All interactions of a seeded ``max_users`` users (re-indexed densely); items unchanged."""
    if max_users <= 0 or max_users >= data.n_users:
        return data
    chosen = np.sort(np.random.default_rng([seed, SUBSAMPLE_STREAM]).choice(data.n_users, max_users, replace=False))
    new_id = np.full(data.n_users, -1, dtype=np.int64)
    new_id[chosen] = np.arange(max_users)
    keep = new_id[data.users] >= 0
    return Interactions(new_id[data.users[keep]], data.items[keep],
                        None if data.ratings is None else data.ratings[keep],
                        None if data.timestamps is None else data.timestamps[keep],
                        data.user_ids[chosen], data.item_ids)


def build_context(config: CompareConfig, data: Interactions, split: LeaveOneOutSplit) -> Context:
    """The shared context; item features (if the dataset has them) add ``feature_diversity@K``."""
    features = None
    if has_item_features(config.dataset):
        features = dataset_item_features(config.dataset, config.data_dir, config.seed).values
    return Context(config, data, split, features)


def run_row(ctx: Context, model: str, setting: str, users: dict[str, NDArray[np.int64]] | None = None,
            cold: ColdStartSplit | None = None) -> dict[str, Any]:
    """Build, train and evaluate one row; failures become the row's status, never an exception.

    ``users`` maps a metric prefix to a user subset (cold start: ``cold_users_``…);
    ``cold`` adds the new-item metrics.
    """
    entry = MODELS[model]
    row: dict[str, Any] = {"model": model, "family": entry.family, "setting": setting, "status": STATUS_OK,
                           "reason": "", "metrics": {}, "wall_seconds": 0.0, "train_seconds": 0.0,
                           "bytes_sent": 0, "details": "", "info": {}}
    started = time.perf_counter()
    try:
        trained = entry.rows[setting](ctx)
        row["train_seconds"] = time.perf_counter() - started
        metrics = dict(trained.metrics)
        if trained.scorer is not None:
            c = ctx.config
            if users is None:
                metrics.update(evaluate_scorer(trained.scorer, ctx.split, c.k,
                                               diversity_features=ctx.diversity_features))
            for prefix, subset in (users or {}).items():
                if len(subset):
                    part = evaluate_scorer(trained.scorer, ctx.split, c.k, users=subset)
                    metrics.update({prefix + key: value for key, value in part.items()})
            if cold is not None:
                metrics.update(new_item_metrics(trained.scorer, cold, c.k, c.seed))
        row.update(metrics=metrics, bytes_sent=int(trained.bytes_sent), details=trained.details, info=trained.info)
    except NotAvailable as reason:
        row.update(status=STATUS_NOT_AVAILABLE, reason=str(reason))
    except Exception as err:  # recorded in the row and printed; the comparison goes on
        row.update(status=STATUS_FAILED, reason=f"{type(err).__name__}: {err}",
                   info={"traceback": traceback.format_exc(limit=4)})
    row["wall_seconds"] = time.perf_counter() - started
    return row


def describe_row(row: dict[str, Any], k: int) -> str:
    """One progress line: status, seconds and the headline metric."""
    head = f"{row['model']} · {row['setting']}"
    if row["status"] != STATUS_OK:
        return f"{head}: {row['status']} — {row['reason']}"
    m = row["metrics"]
    if f"hr@{k}" in m:
        headline = f"HR@{k} {m[f'hr@{k}']:.3f}, full HR@{k} {m[f'full_hr@{k}']:.3f}, coverage {m[f'coverage@{k}']:.3f}"
    elif f"cold_users_hr@{k}" in m or "new_item_auc" in m:
        headline = ", ".join(f"{key} {m[key]:.3f}" for key in (f"cold_users_hr@{k}", "new_item_auc") if key in m)
    else:
        headline = ", ".join(f"{key} {value:.3f}" for key, value in m.items())
    return f"{head}: {row['wall_seconds']:.1f} s — {headline}"


def run_compare(config: CompareConfig, out_dir: Path | None = None, progress: Progress = print) -> CompareResult:
    """Run every chosen model × setting (then the cold-start section) and, with ``out_dir``,
    rewrite the report after every row (so an interrupted run leaves what it finished)."""
    started = time.perf_counter()
    torch.set_num_threads(config.threads)
    full = load_dataset(config.dataset, config.data_dir, config.seed)
    data = subsample_users(full, config.budget.max_users, config.seed)
    split = leave_one_out(data, config.seed)
    ctx = build_context(config, data, split)
    meta = _meta(config, data, split, full.n_users)
    plan = [(model, setting) for model in config.chosen_models for setting in MODELS[model].rows]
    cold_plan = [(m, s) for m, s in COLD_START_ROWS if m in config.chosen_models] if config.budget.cold_start else []
    progress(f"fedrec compare: {len(plan)} rows + {len(cold_plan)} cold-start rows on {meta['data']}")
    result = CompareResult(meta, [], [])
    total = len(plan) + len(cold_plan)

    def finish(rows: list[dict[str, Any]], row: dict[str, Any], done: int, prefix: str = "") -> None:
        rows.append(row)
        progress(f"[{done}/{total}] {prefix}{describe_row(row, config.k)}")
        result.meta["wall_seconds"] = time.perf_counter() - started
        if out_dir is not None:
            write_report(result.meta, result.rows, result.cold_rows, out_dir, chart=False)

    for done, (model, setting) in enumerate(plan, start=1):
        progress(f"[{done}/{total}] {model} · {setting} …")
        finish(result.rows, run_row(ctx, model, setting), done)
    if cold_plan:
        cold = make_cold_start_split(split, config.cold_max_items, config.cold_user_fraction,
                                     config.new_item_fraction, config.seed)
        meta["cold_start"] = _cold_meta(cold, config)
        cold_ctx = Context(config, data, cold.split, None)
        subsets = {"cold_users_": cold.cold_users, "warm_users_": cold.warm_users}
        for done, (model, setting) in enumerate(cold_plan, start=len(plan) + 1):
            progress(f"[{done}/{total}] cold start: {model} · {setting} …")
            finish(result.cold_rows, run_row(cold_ctx, model, setting, users=subsets, cold=cold), done, "cold start: ")
    meta["wall_seconds"] = time.perf_counter() - started
    meta["load_average_end"] = _load_average()
    if out_dir is not None:
        write_report(result.meta, result.rows, result.cold_rows, out_dir, chart=True)
    return result


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _meta(config: CompareConfig, data: Interactions, split: LeaveOneOutSplit, all_users: int) -> dict[str, Any]:
    b, k = config.budget, config.k
    subsample = (f" (a seeded subsample of {data.n_users} of its {all_users} users)" if data.n_users < all_users
                 else "")
    load = _load_average()
    return {
        "dataset": config.dataset, "data_dir": config.data_dir, "quick": config.quick, "k": k, "seed": config.seed,
        "epsilon": config.epsilon, "delta": config.delta, "models": list(config.chosen_models),
        "budget": asdict(b), "n_users": data.n_users, "n_items": data.n_items, "n_interactions": len(data),
        "cpu_count": os.cpu_count(), "torch_threads": config.threads, "load_average_start": load,
        "data": f"{config.dataset}: {data.n_users} users × {data.n_items} items, {len(data)} interactions{subsample}.",
        "split": (f"leave-one-out (latest interaction = test, the one before = validation), seed {config.seed}, "
                  f"{len(split.evaluated_users())} evaluated users; the same split for every ranking row. "
                  f"Explicit MF uses its own {RATING_TEST_FRACTION:g} per-user rating hold-out."),
        "evaluation": (f"one evaluation for every ranking row (fedrec.core.baselines.evaluate_scorer): HR/NDCG@{k} "
                       f"of the test item among 99 sampled negatives; full HR@{k}, P/R/MRR@{k} over the whole "
                       f"catalogue minus the user's training and validation items; coverage@{k} = share of the "
                       f"catalogue in some top-{k} list; diversity@{k} = mean intra-list (1 − cosine) of the items' "
                       f"training-user columns; novelty@{k} = mean −log2 popularity (bits)."),
        "federated": ("every federated row but ItemPop's (an exact count sum) runs the one round driver, "
                      "fedrec.core.federation.driver.run_federation — the registry models (mf, gmf, mlp, neumf, "
                      "hybrid, content, bpr = MF with the BPR loss), sasrec, explicit-mf and item-knn, with the same "
                      "per-user arithmetic, sampling and aggregation as the Flower apps, in one process, without "
                      "Flower (no serialisation or Ray overhead in the seconds) — and is scored from the final "
                      "state it returns. Each federated user of a registry model is scored as its client scores "
                      "it: its vector refitted on its own items with the global part frozen."),
        "bytes": ("bytes sent during training, from the arrays that travel: Σ over rounds of clients × 2 × the "
                  "global part (float32: down, and an update of the same size up); item-kNN: each user's share up, "
                  "the pruned similarity down; central rows 0."),
        "machine": (f"{os.cpu_count()} CPU cores, torch threads {config.threads}; load average at start "
                    f"{load} (the machine is shared: seconds move with its load)."),
    }


def _cold_meta(cold: ColdStartSplit, config: CompareConfig) -> dict[str, Any]:
    return {
        "max_train_items": cold.max_train_items, "cold_users": int(len(cold.cold_users)),
        "warm_users": int(len(cold.warm_users)), "new_items": int(len(cold.new_items)),
        "new_item_users": int(len(cold.new_item_users)),
        "description": (f"{len(cold.new_items)} new items ({config.new_item_fraction:.0%} of the catalogue, drawn "
                        "among items with 3 to median training users that are nobody's validation or test item) "
                        "are removed from every training list; "
                        f"{config.cold_user_fraction:.0%} of the evaluated users keep only their latest "
                        f"{cold.max_train_items} training items. Validation and test items are unchanged."),
    }
