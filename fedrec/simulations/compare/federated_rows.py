"""The ``federated`` and ``federated + DP`` rows of ``fedrec compare``.

Every round-based federated row runs the one round driver,
:func:`fedrec.core.federation.driver.run_federation` (the per-user arithmetic, sampling and
aggregation of the Flower apps, in one process, without Flower), with the
:class:`~fedrec.core.config.run_config.RunConfig` of its model family, and is scored from
the :class:`~fedrec.core.federation.driver.FederationResult` it returns: the registry models
per user as their clients score them (:class:`~fedrec.simulations.compare.scorers.FederatedScorer`),
SASRec from its global arrays, item-kNN from the similarity of the summed shares
(:func:`fedrec.core.families.itemknn.similarity_of`); explicit MF reports the driver's own
RMSE/MAE of its last round. ItemPop's federated form is its exact count sum (no training).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from fedrec.core.arrays import Arrays
from fedrec.core.baselines import ItemPop
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.split import LeaveOneOutSplit
from fedrec.core.federation.driver import FederationResult, run_federation
from fedrec.simulations.compare.central_rows import SASREC
from fedrec.simulations.compare.config import FLOAT32_BYTES, RATING_DIM, RATING_TEST_FRACTION
from fedrec.simulations.compare.context import (
    Context,
    NotAvailable,
    Trained,
    check_features,
    rating_split,
    sequence_modules,
)
from fedrec.simulations.compare.scorers import FederatedScorer, SequenceScorer, SimilarityScorer

ITEMKNN_MAX_ITEMS = 60  # M: items a user contributes (docstring of fedrec.core.baselines.federated_itemknn)
# σ_e the DP item-kNN's privacy plan reserves for an evaluation release: so large that the
# reservation costs ε ≈ 0 and the one similarity release gets the whole budget. compare
# makes no such release (evaluate=False): its metrics are the harness's exact evaluation.
ITEMKNN_UNRELEASED_EVAL_NOISE = 1000.0


def federated_model(split: LeaveOneOutSplit, config: RunConfig,
                    threads: int) -> tuple[FederatedScorer, FederationResult]:
    """Train ``config`` with the round driver (no evaluation rounds); its scorer and result."""
    result = run_federation(config, split, threads=threads, evaluate=False)
    if not result.rows:
        raise RuntimeError("the round driver ran no round: nothing to evaluate")
    return FederatedScorer(config, result.arrays, result.locals).fit(split), result


def round_bytes(arrays: Arrays, clients_per_round: list[int]) -> int:
    """``Σ_r clients_r × 2 × |arrays|``: the global part down and an update of its size up, per client."""
    size = sum(int(np.asarray(v).nbytes) for v in arrays.values())
    return 2 * size * int(sum(clients_per_round))


def _clients(result: FederationResult) -> list[int]:
    return [int(r["clients"]) for r in result.rows]


def federated_itempop(ctx: Context) -> Trained:
    split = ctx.split
    holders = int(np.sum(np.diff(split.train_indptr) > 0))
    return Trained(
        "the counts c_i are a sum over users: each client sends its count vector (n_items float32), the server "
        "adds them and sends c back, one round, no noise — the same counts, hence the same scores, as central",
        scorer=ItemPop().fit(split), bytes_sent=2 * holders * split.n_items * FLOAT32_BYTES)


def federated_userknn(ctx: Context) -> Trained:
    raise NotAvailable("user-kNN scores a user from its nearest other users' item sets; fedrec has no federated "
                       "form (it would ship users' item sets to each other)")


def _itemknn_config(ctx: Context, **overrides: Any) -> RunConfig:
    c = ctx.config
    return RunConfig(dataset=c.dataset, data_dir=c.data_dir, model="item-knn", rounds=1, executor="cohort",
                     clients_per_round=ctx.split.n_users, knn_max_items=ITEMKNN_MAX_ITEMS, seed=c.seed, **overrides)


def federated_itemknn(dp: bool, ctx: Context) -> Trained:
    from fedrec.core.baselines.federated_itemknn import contribution_bound
    from fedrec.core.families.itemknn import similarity_of
    from fedrec.core.privacy import plan

    split, c = ctx.split, ctx.config
    clip = contribution_bound(ITEMKNN_MAX_ITEMS)
    head = (f"run_federation, model item-knn (cohort executor): one round, all {split.n_users} users, each sends "
            f"its co-occurrence share of at most M = {ITEMKNN_MAX_ITEMS} items, the server adds them")
    info: dict[str, Any] = {}
    if dp:
        config = _itemknn_config(ctx, knn_neighbours=split.n_items, dp="user-central", epsilon=c.epsilon,
                                 delta=c.delta, clip=clip, eval_noise_multiplier=ITEMKNN_UNRELEASED_EVAL_NOISE)
        plan.preflight(config, split)  # δ against the number of users
        sigma = plan.central_noise(config, split.n_users)
        config = replace(config, knn_shrink=1000.0 * sigma * clip)
        result = run_federation(config, split, threads=c.threads, evaluate=False)
        spent = float(result.rows[-1]["epsilon_max"])
        details = (f"{head}; dp user-central: clip C = C(M) = {clip:.4g} (no share is scaled down), q = 1, the "
                   f"server adds N(0, σ²C²) to the sum once, σ = {sigma:.3g} derived for ε = {c.epsilon:g}, "
                   f"δ = {c.delta:g} (user-level, {config.accountant}); the plan's evaluation reservation is set to "
                   f"≈ 0 (σ_e = {ITEMKNN_UNRELEASED_EVAL_NOISE:g}) and no evaluation is released (evaluate=False: "
                   f"the metrics are the harness's exact evaluation of the released similarity), so the release "
                   f"spends ε = {spent:.4g} (the rows' epsilon_max); k = n_items, shrink = 1000·σ·C = "
                   f"{config.knn_shrink:.3g} (the settings fedrec.core.baselines.federated_itemknn measured "
                   "under noise)")
        info = {"epsilon_spent": spent, "noise_multiplier": sigma}
    else:
        config = _itemknn_config(ctx, knn_neighbours=20, knn_shrink=10.0)
        result = run_federation(config, split, threads=c.threads, evaluate=False)
        details = (f"{head} without noise (nothing private); k = {config.knn_neighbours}, "
                   f"shrink = {config.knn_shrink:g}")
    similarity = similarity_of(config, result.arrays)
    held = np.minimum(np.diff(split.train_indptr), ITEMKNN_MAX_ITEMS)
    upload = int(np.sum(held * (held - 1) // 2 * 2 * 8 + held * 8))  # int64 pairs (i, j) and items
    released = sp.csr_matrix(similarity)
    contributors = int(np.sum(held > 0))
    download = contributors * (released.data.nbytes + released.indices.nbytes + released.indptr.nbytes)
    return Trained(details + "; bytes: each share up (int64 pairs and items), the pruned similarity down (CSR)",
                   scorer=SimilarityScorer(similarity).fit(split), bytes_sent=upload + download, info=info)


def _federated_config(ctx: Context, model: str, **overrides: Any) -> RunConfig:
    check_features(model, ctx)
    c, b = ctx.config, ctx.budget
    settings: dict[str, Any] = dict(
        dataset=c.dataset, data_dir=c.data_dir, model=model, dim=32, rounds=b.rounds,
        clients_per_round=min(b.clients_per_round, ctx.split.n_users), local_epochs=b.local_epochs,
        client_optimizer="sgd", lr=2.0, server_lr=20.0, aggregation="fedavg-slr", seed=c.seed,
        eval_every=b.rounds, executor="cohort")
    settings.update(overrides)
    return RunConfig(**settings)


def _describe_driver(config: RunConfig) -> str:
    return (f"run_federation (cohort executor): {config.rounds} rounds × {config.clients_per_round} users, "
            f"{config.user_epochs} user-vector epoch + {config.local_epochs} local epoch(s), SGD lr {config.lr:g}, "
            f"batch {config.batch_size}, {config.loss.upper()} with {config.negatives} negatives, FedAvg with server "
            f"lr {config.server_lr:g} on the item tables, d = {config.dim}; evaluation refits each user's vector "
            f"for {config.reconstruct_epochs} epochs with the global part frozen")


def federated_registry(model: str, loss: str, ctx: Context) -> Trained:
    config = _federated_config(ctx, model, loss=loss)
    scorer, result = federated_model(ctx.split, config, ctx.config.threads)
    return Trained(_describe_driver(config), scorer=scorer, bytes_sent=round_bytes(result.arrays, _clients(result)))


def federated_dp(model: str, ctx: Context) -> Trained:
    from fedrec.core.privacy.plan import preflight

    b, c = ctx.budget, ctx.config
    clients = b.dp_clients_per_round or ctx.split.n_users
    config = _federated_config(ctx, model, rounds=b.dp_rounds, clients_per_round=min(clients, ctx.split.n_users),
                               local_epochs=1, user_epochs=1, batch_size=16, dp="user-central",
                               epsilon=c.epsilon, delta=c.delta, clip=0.3)
    described = preflight(config, ctx.split)
    scorer, result = federated_model(ctx.split, config, c.threads)
    rows = result.rows
    spent = rows[-1].get("epsilon_max")
    info = {"epsilon_spent": spent, "rounds_run": len(rows),
            "refused": int(sum(r.get("dp_refused", 0) for r in rows))}
    return Trained(f"{_describe_driver(config)}; clip C = {config.clip:g} (the privacy-utility benchmark's settings); "
                   f"{described}. compare releases no evaluation (evaluate=False: the metrics are the harness's "
                   f"exact evaluation of the final model), so the share of ε the plan keeps for it is unspent: "
                   f"training spent ε = {spent:.4g} (the rows' epsilon_max)", scorer=scorer,
                   bytes_sent=round_bytes(result.arrays, _clients(result)), info=info)


def federated_sequence(ctx: Context) -> Trained:
    sequence, training = sequence_modules()
    b, c = ctx.budget, ctx.config
    clients = min(b.sequence_clients, len(training.trainable_users(ctx.split)))
    config = RunConfig(dataset=c.dataset, data_dir=c.data_dir, model="sasrec", dim=SASREC["dim"],
                       seq_max_len=SASREC["max_len"], seq_blocks=SASREC["blocks"], seq_heads=SASREC["heads"],
                       seq_dropout=SASREC["dropout"], lr=0.01, batch_size=8, negatives=1, client_optimizer="adam",
                       rounds=b.sequence_rounds, clients_per_round=clients, local_epochs=b.sequence_local_epochs,
                       server_lr=10.0, aggregation="fedavg-slr", seed=c.seed, eval_every=b.sequence_rounds)
    result = run_federation(config, ctx.split, threads=c.threads, evaluate=False)
    model = sequence.SASRecConfig(**SASREC).build(ctx.split.n_items, seed=c.seed)
    sequence.load_sequence_global(model, {name: torch.from_numpy(value) for name, value in result.arrays.items()})
    return Trained(f"run_federation, model sasrec: SASRec {SASREC}, {b.sequence_rounds} rounds × {clients} users "
                   f"(among those with ≥ 2 training items), {b.sequence_local_epochs} local epochs, Adam lr 0.01, "
                   "batch 8, BCE with 1 negative, FedAvg with server lr 10 on the item table; every parameter is "
                   "global (a user's history never leaves the device); scored from the final global arrays",
                   scorer=SequenceScorer(model).fit(ctx.split),
                   bytes_sent=round_bytes(result.arrays, _clients(result)))


def federated_rating(ctx: Context) -> Trained:
    split, b, c = rating_split(ctx), ctx.budget, ctx.config
    clients = min(b.rating_clients, split.n_users)
    config = RunConfig(dataset=c.dataset, data_dir=c.data_dir, model="explicit-mf", dim=RATING_DIM, lr=0.02,
                       batch_size=32, weight_decay=0.05, client_optimizer="adam", local_epochs=2, user_epochs=1,
                       server_lr=10.0, aggregation="fedavg-slr", reconstruct_epochs=3, rounds=b.rating_rounds,
                       clients_per_round=clients, eval_every=b.rating_rounds, seed=c.seed,
                       rating_test_fraction=RATING_TEST_FRACTION)
    result = run_federation(config, split, threads=c.threads)  # evaluates at the last round
    last = result.rows[-1]
    return Trained(f"run_federation, model explicit-mf: {b.rating_rounds} rounds × {clients} users, 1 user-vector "
                   "epoch + 2 local epochs, Adam lr 0.02, batch 32, per-rating L2 0.05, server lr 10 on the item "
                   "tables, μ started at the mean training rating; RMSE/MAE of the driver's evaluation after the "
                   "last round (each user's vector and bias refitted for 3 epochs with the global part frozen, "
                   f"pooled over the {RATING_TEST_FRACTION:g} per-user rating hold-out)",
                   metrics={"rmse": float(last["rmse"]), "mae": float(last["mae"])},
                   bytes_sent=round_bytes(result.arrays, _clients(result)))
