"""``fedrec compare``: every recommender family on one split, centrally and federated.

One leave-one-out split of the dataset (optionally a seeded subsample of its users, for
``--quick``) is shared by every ranking row; each row is one model × setting:

* ``central`` — the model trained in one place: the baselines of
  :mod:`fedrec.core.baselines`, the registry models through
  :func:`fedrec.core.training.central.train_central`, the sequence model through
  :func:`fedrec.core.training.sequence.train_sequence_central`;
* ``federated`` — the same model trained without any user's data leaving its client:
  registry models through :func:`fedrec.simulations.torch_loop.run_torch_loop` (the
  per-user arithmetic and aggregation of the Flower apps, in one process, no Flower),
  item-kNN through :func:`fedrec.core.baselines.federated_itemknn.run_federated_itemknn`, the
  sequence model through :func:`~fedrec.core.training.sequence.federated_sequence_training`,
  explicit MF by FedAvg over users with :func:`fedrec.core.training.ratings.train_rating_user`;
* ``federated + DP`` — user-level DP at one ε (user-central noise for MF, one noisy
  release for item-kNN);
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
(:func:`make_cold_start_split`).

    fedrec compare --dataset ml-100k --data-dir DIR --quick --out runs/compare
"""

from __future__ import annotations

import inspect
import os
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import NDArray

from fedrec.core.baselines import BPR, BPRConfig, ItemKNN, ItemPop, Scorer, UserKNN, evaluate_scorer, training_matrix
from fedrec.core.baselines.scorer import RecommenderScorer, check_users
from fedrec.core.training.central import CentralConfig, train_central
from fedrec.core.data.interactions import Interactions
from fedrec.core.data.item_features import dataset_item_features, has_item_features
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import NO_ITEM, LeaveOneOutSplit, leave_one_out
from fedrec.core.training.local_round import user_scores
from fedrec.core.models.registry import needs_item_features
from fedrec.core.evaluation.lists import list_hit_ratio_at_k, list_recall_at_k
from fedrec.core.recommend.reranking import mmr_rerank
from fedrec.core.config.run_config import RunConfig
from fedrec.core.models.run_model import run_item_features
from fedrec.core.training.implicit import TrainingConfig
from fedrec.simulations import torch_loop
from fedrec.simulations.compare_report import (
    CENTRAL,
    CENTRAL_MMR,
    FEDERATED,
    FEDERATED_DP,
    STATUS_FAILED,
    STATUS_NOT_AVAILABLE,
    STATUS_OK,
    write_report,
)
from fedrec.core.arrays import Arrays

Progress = Callable[[str], None]

FLOAT32_BYTES = 4
SUBSAMPLE_STREAM = 61  # the --quick user subsample's generator stream
COLD_START_STREAM = 67  # cold users and new items
NEW_ITEM_TIE_STREAM = 71  # order of tied new items in a top-K list


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Budget:
    """How long each kind of row trains; :data:`FULL` and :data:`QUICK` are the two used.

    Attributes:
        max_users: a seeded subsample of this many users (all their interactions); ``0``: all users.
        central_epochs: epochs of :func:`train_central` (Adam lr 1e-3, batch 256, d = 32).
        bpr_epochs: epochs of the BPR-MF baseline.
        rounds, clients_per_round, local_epochs: the federated registry models (torch loop).
        dp_rounds, dp_clients_per_round: the DP row (``0`` clients: every user, q = 1).
        sequence_epochs, sequence_rounds, sequence_clients, sequence_local_epochs: SASRec.
        rating_epochs, rating_rounds, rating_clients: explicit MF, central and FedAvg.
        cold_start: whether to run the cold-start section.
    """

    max_users: int = 0
    central_epochs: int = 20
    bpr_epochs: int = 20
    rounds: int = 100
    clients_per_round: int = 100
    local_epochs: int = 2
    dp_rounds: int = 10
    dp_clients_per_round: int = 0
    sequence_epochs: int = 5
    sequence_rounds: int = 30
    sequence_clients: int = 50
    sequence_local_epochs: int = 5
    rating_epochs: int = 6
    rating_rounds: int = 10
    rating_clients: int = 200
    cold_start: bool = True

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            lowest = 0 if name in ("max_users", "dp_clients_per_round") else 1
            if not isinstance(value, bool) and value < lowest:
                raise ValueError(f"budget {name} must be ≥ {lowest}, got {value}")


# The full comparison: the federated budget of the README's ML-100K benchmark (100 rounds ×
# 100 clients × 2 local epochs ≈ 21 epochs per user) and a central twin of 20 epochs.
FULL = Budget()
# --quick: 300 users and a fraction of the training (2–4 minutes on 2 cores, by their load).
QUICK = Budget(max_users=300, central_epochs=8, bpr_epochs=10, rounds=15, clients_per_round=50, local_epochs=2,
               dp_rounds=5, sequence_epochs=2, sequence_rounds=5, sequence_clients=30, sequence_local_epochs=3,
               rating_epochs=4, rating_rounds=4, rating_clients=100)


@dataclass(frozen=True)
class CompareConfig:
    """What ``fedrec compare`` runs. ``models`` are names of :data:`MODELS`."""

    dataset: str = "synthetic"
    data_dir: str = ""
    models: tuple[str, ...] = ()
    budget: Budget = FULL
    quick: bool = False
    seed: int = 0
    k: int = 10
    epsilon: float = 8.0
    delta: float = 1e-5
    cold_max_items: int = 5
    cold_user_fraction: float = 0.1
    new_item_fraction: float = 0.05
    threads: int = 1

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(map(repr, unknown))} for fedrec compare: "
                             f"choose from {', '.join(MODELS)}")
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}: the DP rows need a budget")
        if self.k < 1 or self.cold_max_items < 1 or self.threads < 1:
            raise ValueError(f"k, cold-max-items and threads must be ≥ 1, got {self.k}, {self.cold_max_items}, "
                             f"{self.threads}")
        if not (0 < self.cold_user_fraction < 1 and 0 < self.new_item_fraction < 1):
            raise ValueError("cold-user and new-item fractions must lie in (0, 1)")

    @property
    def chosen_models(self) -> tuple[str, ...]:
        return self.models or DEFAULT_MODELS


# --------------------------------------------------------------------------- what a row yields


class NotAvailable(Exception):
    """A row that cannot run here, with the reason (recorded, not fatal)."""


@dataclass
class Trained:
    """What a row builder produced: a fitted ``scorer`` for the one ranking evaluation
    and/or ready ``metrics`` (rating rows), the bytes training sent, and a description."""

    details: str
    scorer: Scorer | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    bytes_sent: int = 0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """The data every row of one comparison shares."""

    config: CompareConfig
    data: Interactions
    split: LeaveOneOutSplit
    diversity_features: NDArray[np.float32] | None
    scorers: dict[tuple[str, str], Scorer] = field(default_factory=dict)

    @property
    def budget(self) -> Budget:
        return self.config.budget


RowBuilder = Callable[[Context], Trained]


# --------------------------------------------------------------------------- scorers


class FederatedScorer:
    """A federated model scored as its clients score it: the global ``arrays`` and each
    user's stored vector (``local``; a fresh seeded one for a user who never trained), fitted
    for ``reconstruct-epochs`` on the user's own items with the global part frozen
    (:func:`fedrec.core.training.local_round.user_scores`)."""

    def __init__(self, config: RunConfig, arrays: Arrays, local: dict[int, Arrays]) -> None:
        self.config, self.arrays, self.local = config, arrays, local
        self.features = run_item_features(config)
        self.split: LeaveOneOutSplit | None = None

    def fit(self, split: LeaveOneOutSplit) -> FederatedScorer:
        self.split = split
        return self

    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        split = _fitted(self.split, self)
        users = check_users(users, split.n_users)
        c = self.config
        return np.stack([user_scores(c.model, c.dim, self.arrays, self.local.get(int(u)),
                                     split.user_data(int(u), for_evaluation=False), c.training,
                                     c.reconstruct_epochs, c.seed, item_features=self.features)
                         for u in users]).astype(np.float32, copy=False)


class SimilarityScorer:
    """Item-kNN from a released ``(n_items, n_items)`` similarity: ``s_u = S x_u``
    (:func:`fedrec.core.baselines.federated_itemknn.score_user` for all users at once)."""

    def __init__(self, similarity: NDArray[np.float64]) -> None:
        self.similarity = sp.csr_matrix(similarity)
        self.X: sp.csr_matrix | None = None

    def fit(self, split: LeaveOneOutSplit) -> SimilarityScorer:
        self.X = training_matrix(split)
        return self

    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        X = _fitted(self.X, self)
        users = check_users(users, X.shape[0])
        return (X[users] @ self.similarity.T).toarray().astype(np.float32)


class SequenceScorer:
    """A sequence model scoring the next item after each user's training + validation items."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.split: LeaveOneOutSplit | None = None

    def fit(self, split: LeaveOneOutSplit) -> SequenceScorer:
        self.split = split
        return self

    @torch.no_grad()
    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        from fedrec.core.models.sequence import history_tokens
        from fedrec.core.training.sequence import evaluation_history

        split = _fitted(self.split, self)
        users = check_users(users, split.n_users)
        self.model.eval()
        histories = [evaluation_history(split.user_data(int(u), for_evaluation=False)) for u in users]
        tokens = history_tokens(histories, split.n_items, self.model.max_len)
        return self.model.score_items_for_history(tokens).numpy().astype(np.float32, copy=False)


class MMRScorer:
    """Another scorer's top-``k`` re-ranked by MMR (:func:`fedrec.core.recommend.reranking.mmr_rerank`).

    The re-ranked list is put on top, in its order, above every other item, which keeps
    its score: ``s'_i = max(s) + 1 + (k − position)`` for the list's items. So the one
    evaluation sees exactly the MMR list (and the sampled protocol sees its effect too).
    """

    def __init__(self, base: Scorer, item_vectors: NDArray[np.floating], k: int, lam: float, pool: int) -> None:
        self.base, self.item_vectors, self.k, self.lam, self.pool = base, item_vectors, k, lam, pool
        self.split: LeaveOneOutSplit | None = None

    def fit(self, split: LeaveOneOutSplit) -> MMRScorer:
        self.split = split
        return self

    def score_users(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        split = _fitted(self.split, self)
        scores = np.array(self.base.score_users(users), dtype=np.float64)
        for row, u in zip(scores, users):
            excluded = split.user_data(int(u), for_evaluation=False).excluded_from_ranking()
            chosen = mmr_rerank(row, self.item_vectors, self.k, self.lam, pool=self.pool, exclude=excluded)
            row[chosen] = row.max() + 1 + np.arange(len(chosen))[::-1]
        return scores.astype(np.float32)


def _fitted(value: Any, scorer: Any) -> Any:
    if value is None:
        raise RuntimeError(f"{type(scorer).__name__} is not fitted: call fit(split) first")
    return value


# --------------------------------------------------------------------------- the torch loop's final model


@dataclass
class _LoopState:
    arrays: Arrays | None = None
    local: dict[int, Arrays] | None = None


@contextmanager
def _final_state_of(loop_module: Any) -> Iterator[_LoopState]:
    """Read the final global arrays and stored user vectors of :func:`run_torch_loop`.

    ``run_torch_loop`` returns per-round rows only; the one evaluation needs every item's
    score, hence the model. The loop hands both to its per-round evaluation step
    (``_evaluated(…, arrays, local, …)``, called every round whether or not it evaluates);
    this wraps that step to keep the last values, changing nothing it computes.
    """
    original = loop_module._evaluated
    signature = inspect.signature(original)
    if not {"arrays", "local"} <= set(signature.parameters):
        raise NotAvailable("fedrec.simulations.torch_loop._evaluated no longer receives (arrays, local): "
                           "compare cannot read the federated model; give run_torch_loop a way to return it")
    state = _LoopState()

    def keeping(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        state.arrays, state.local = bound.arguments["arrays"], bound.arguments["local"]
        return original(*args, **kwargs)

    loop_module._evaluated = keeping
    try:
        yield state
    finally:
        loop_module._evaluated = original


def run_loop_model(split: LeaveOneOutSplit, config: RunConfig, threads: int) -> tuple[FederatedScorer, list[dict]]:
    """Train ``config`` through the torch loop (no evaluation rounds); its scorer and round rows."""
    with _final_state_of(torch_loop) as state:
        rows = torch_loop.run_torch_loop(split, config, threads=threads, evaluate=False)
    if state.arrays is None or state.local is None:
        raise RuntimeError("the torch loop ran no round: nothing to evaluate")
    return FederatedScorer(config, state.arrays, state.local).fit(split), rows


def round_bytes(arrays: Arrays, clients_per_round: list[int]) -> int:
    """``Σ_r clients_r × 2 × |arrays|``: the global part down and an update of its size up, per client."""
    size = sum(int(np.asarray(v).nbytes) for v in arrays.values())
    return 2 * size * int(sum(clients_per_round))


# --------------------------------------------------------------------------- row builders


def _central_baseline(make: Callable[[Context], Scorer], details: str, ctx: Context) -> Trained:
    return Trained(details, scorer=make(ctx).fit(ctx.split))


def _federated_itempop(ctx: Context) -> Trained:
    split = ctx.split
    holders = int(np.sum(np.diff(split.train_indptr) > 0))
    return Trained(
        "the counts c_i are a sum over users: each client sends its count vector (n_items float32), the server "
        "adds them and sends c back, one round, no noise — the same counts, hence the same scores, as central",
        scorer=ItemPop().fit(split), bytes_sent=2 * holders * split.n_items * FLOAT32_BYTES)


def _federated_userknn(ctx: Context) -> Trained:
    raise NotAvailable("user-kNN scores a user from its nearest other users' item sets; fedrec has no federated "
                       "form (it would ship users' item sets to each other)")


ITEMKNN_MAX_ITEMS = 60  # M: items a user contributes (docstring of fedrec.core.baselines.federated_itemknn)


def _federated_itemknn(dp: bool, ctx: Context) -> Trained:
    from fedrec.core.baselines.federated_itemknn import contribution_bound, release_noise, run_federated_itemknn

    split, c = ctx.split, ctx.config
    if dp:
        sigma = release_noise(c.epsilon, c.delta)
        shrink = 1000.0 * sigma * contribution_bound(ITEMKNN_MAX_ITEMS)
        k = split.n_items
        details = (f"run_federated_itemknn: M = {ITEMKNN_MAX_ITEMS} items per user, one Gaussian release at "
                   f"ε = {c.epsilon:g}, δ = {c.delta:g} (user-level, RDP; σ = {sigma:.3g}), k = n_items, "
                   f"shrink = 1000·σ·C = {shrink:.3g} (the settings its docstring measured under noise)")
        result = run_federated_itemknn(split, ITEMKNN_MAX_ITEMS, k, shrink, epsilon=c.epsilon, delta=c.delta,
                                       seed=c.seed)
        info = {"epsilon_spent": result.privacy.epsilon, "noise_multiplier": sigma}
    else:
        k, shrink = 20, 10.0
        details = (f"run_federated_itemknn without noise (nothing private): M = {ITEMKNN_MAX_ITEMS} items per user, "
                   f"k = {k}, shrink = {shrink:g}")
        result = run_federated_itemknn(split, ITEMKNN_MAX_ITEMS, k, shrink, seed=c.seed)
        info = {}
    held = np.minimum(np.diff(split.train_indptr), ITEMKNN_MAX_ITEMS)
    upload = int(np.sum(held * (held - 1) // 2 * 2 * 8 + held * 8))  # int64 pairs (i, j) and items
    released = sp.csr_matrix(result.similarity)
    download = result.contributors * (released.data.nbytes + released.indices.nbytes + released.indptr.nbytes)
    return Trained(details + "; bytes: each share up (int64 pairs and items), the pruned similarity down (CSR)",
                   scorer=SimilarityScorer(result.similarity).fit(split), bytes_sent=upload + download, info=info)


def _central_bpr(ctx: Context) -> Trained:
    config = BPRConfig(dim=32, epochs=ctx.budget.bpr_epochs, seed=ctx.config.seed)
    return Trained(f"BPR baseline: MF with d = {config.dim}, {config.epochs} epochs, Adam lr {config.lr:g}, "
                   f"batch {config.batch_size}, one sampled negative per positive, L2 {config.reg:g}",
                   scorer=BPR(config).fit(ctx.split))


def _check_features(model: str, ctx: Context) -> None:
    if needs_item_features(model) and not has_item_features(ctx.config.dataset):
        raise NotAvailable(f"{model} reads item features, which dataset {ctx.config.dataset!r} does not have")


def _central_registry(model: str, ctx: Context) -> Trained:
    _check_features(model, ctx)
    c, b = ctx.config, ctx.budget
    training = TrainingConfig(lr=0.001, batch_size=256)
    trained, _ = train_central(ctx.split, CentralConfig(model=model, dim=32, epochs=b.central_epochs, seed=c.seed,
                                                        eval_every=b.central_epochs, k=c.k, training=training,
                                                        dataset=c.dataset, data_dir=c.data_dir))
    scorer = RecommenderScorer(trained).fit(ctx.split)
    ctx.scorers[(model, CENTRAL)] = scorer
    return Trained(f"train_central: d = 32, {b.central_epochs} epochs, Adam lr 1e-3, batch 256, BCE with "
                   f"{training.negatives} sampled negatives per positive", scorer=scorer)


def _federated_config(ctx: Context, model: str, **overrides: Any) -> RunConfig:
    _check_features(model, ctx)
    c, b = ctx.config, ctx.budget
    settings: dict[str, Any] = dict(
        dataset=c.dataset, data_dir=c.data_dir, model=model, dim=32, rounds=b.rounds,
        clients_per_round=min(b.clients_per_round, ctx.split.n_users), local_epochs=b.local_epochs,
        client_optimizer="sgd", lr=2.0, server_lr=20.0, aggregation="fedavg-slr", seed=c.seed,
        eval_every=b.rounds, executor="cohort")
    settings.update(overrides)
    return RunConfig(**settings)


def _describe_loop(config: RunConfig) -> str:
    return (f"run_torch_loop (cohort executor): {config.rounds} rounds × {config.clients_per_round} users, "
            f"{config.user_epochs} user-vector epoch + {config.local_epochs} local epoch(s), SGD lr {config.lr:g}, "
            f"batch {config.batch_size}, {config.loss.upper()} with {config.negatives} negatives, FedAvg with server "
            f"lr {config.server_lr:g} on the item tables, d = {config.dim}; evaluation refits each user's vector "
            f"for {config.reconstruct_epochs} epochs with the global part frozen")


def _federated_registry(model: str, loss: str, ctx: Context) -> Trained:
    config = _federated_config(ctx, model, loss=loss)
    scorer, rows = run_loop_model(ctx.split, config, ctx.config.threads)
    return Trained(_describe_loop(config), scorer=scorer,
                   bytes_sent=round_bytes(scorer.arrays, [r["clients"] for r in rows]))


def _federated_dp(model: str, ctx: Context) -> Trained:
    from fedrec.core.privacy.plan import preflight

    b, c = ctx.budget, ctx.config
    clients = b.dp_clients_per_round or ctx.split.n_users
    config = _federated_config(ctx, model, rounds=b.dp_rounds, clients_per_round=min(clients, ctx.split.n_users),
                               local_epochs=1, user_epochs=1, batch_size=16, dp="user-central",
                               epsilon=c.epsilon, delta=c.delta, clip=0.3)
    plan = preflight(config, ctx.split)
    scorer, rows = run_loop_model(ctx.split, config, c.threads)
    info = {"epsilon_spent": rows[-1].get("epsilon_max"), "rounds_run": len(rows),
            "refused": int(sum(r.get("dp_refused", 0) for r in rows))}
    return Trained(f"{_describe_loop(config)}; clip C = {config.clip:g} (the privacy-utility benchmark's settings); "
                   f"{plan}", scorer=scorer,
                   bytes_sent=round_bytes(scorer.arrays, [r["clients"] for r in rows]), info=info)


MMR_LAMBDA, MMR_POOL = 0.5, 100


def _central_mmr(model: str, ctx: Context) -> Trained:
    base = ctx.scorers.get((model, CENTRAL))
    trained_here = base is None
    if base is None:
        base = _central_registry(model, ctx).scorer
    table = getattr(getattr(base, "model", None), "item_embedding", None)
    if table is None:
        raise NotAvailable(f"MMR re-ranks with the model's item embeddings; {model} has none")
    vectors = table.weight.detach().numpy().astype(np.float64)
    scorer = MMRScorer(base, vectors, ctx.config.k, MMR_LAMBDA, MMR_POOL).fit(ctx.split)
    source = "trained here as in the central row" if trained_here else "the central row's model"
    return Trained(f"MMR re-ranking (λ = {MMR_LAMBDA:g}, pool = top {MMR_POOL}, cosine of the model's item "
                   f"embeddings) of {source}; seconds = re-ranking and evaluation", scorer=scorer)


SASREC = dict(dim=32, max_len=50, blocks=1, heads=1, dropout=0.2)


def _sequence_modules() -> tuple[Any, Any]:
    try:
        from fedrec.core.training import sequence as sequence_training
        from fedrec.core.models import sequence
    except ImportError as err:
        raise NotAvailable(f"the sequence model is not in this checkout ({err}); it lives in "
                           "fedrec/core/models/sequence.py and fedrec/core/training/sequence.py") from err
    return sequence, sequence_training


def _central_sequence(ctx: Context) -> Trained:
    sequence, training = _sequence_modules()
    config = sequence.SASRecConfig(**SASREC)
    epochs = ctx.budget.sequence_epochs
    model, _ = training.train_sequence_central(
        ctx.split, config, training.SequenceTrainingConfig(lr=0.005, batch_size=64), epochs=epochs,
        seed=ctx.config.seed, eval_every=epochs, k=ctx.config.k)
    return Trained(f"train_sequence_central: SASRec {SASREC}, {epochs} epochs, Adam lr 0.005, batch 64 windows, "
                   "BCE with 1 negative per target; scores the next item after training + validation items",
                   scorer=SequenceScorer(model).fit(ctx.split))


def _federated_sequence(ctx: Context) -> Trained:
    sequence, training = _sequence_modules()
    b, c = ctx.budget, ctx.config
    config = sequence.SASRecConfig(**SASREC)
    clients = min(b.sequence_clients, len(training.trainable_users(ctx.split)))
    arrays, rows = training.federated_sequence_training(
        ctx.split, config, training.SequenceTrainingConfig(lr=0.01, batch_size=8), rounds=b.sequence_rounds,
        clients_per_round=clients, local_epochs=b.sequence_local_epochs, server_lr=10.0, seed=c.seed,
        eval_every=b.sequence_rounds, k=c.k)
    model = config.build(ctx.split.n_items, seed=c.seed)
    sequence.load_sequence_global(model, {name: torch.from_numpy(value) for name, value in arrays.items()})
    return Trained(f"federated_sequence_training: SASRec {SASREC}, {b.sequence_rounds} rounds × {clients} users, "
                   f"{b.sequence_local_epochs} local epochs, Adam lr 0.01, batch 8, FedAvg with server lr 10 on the "
                   "item table; every parameter is global (a user's history never leaves the device)",
                   scorer=SequenceScorer(model).fit(ctx.split),
                   bytes_sent=round_bytes(arrays, [r["clients"] for r in rows]))


RATING_DIM, RATING_TEST_FRACTION = 16, 0.1


def _rating_split(ctx: Context) -> Any:
    from fedrec.core.training.ratings import holdout_ratings

    if ctx.data.ratings is None:
        raise NotAvailable(f"dataset {ctx.config.dataset!r} has no ratings; explicit MF predicts stars")
    return holdout_ratings(ctx.data, RATING_TEST_FRACTION, ctx.config.seed)


def _central_rating(ctx: Context) -> Trained:
    from fedrec.core.models.registry import build_model
    from fedrec.core.training.ratings import (RatingTrainingConfig, evaluate_rating_model, global_mean_metrics,
                                          train_rating_central)

    split = _rating_split(ctx)
    config = RatingTrainingConfig(lr=0.02, batch_size=1024, l2=0.1)
    model = build_model("explicit-mf", split.n_users, split.n_items, RATING_DIM, seed=ctx.config.seed)
    with torch.no_grad():
        model.global_mean.fill_(split.train_mean())
    epochs = ctx.budget.rating_epochs
    train_rating_central(split, model, config, epochs, np.random.default_rng([ctx.config.seed, 1]))
    metrics = evaluate_rating_model(model, split)
    floor = global_mean_metrics(split)
    return Trained(f"train_rating_central: explicit MF d = {RATING_DIM}, {epochs} epochs, Adam lr 0.02, batch 1024, "
                   f"per-rating L2 0.1; RMSE/MAE on a {RATING_TEST_FRACTION:g} hold-out of each user's ratings",
                   metrics={"rmse": metrics["rmse"], "mae": metrics["mae"]},
                   info={"global_mean_rmse": floor["rmse"], "held_out_ratings": int(metrics["num_ratings"])})


def _federated_rating(ctx: Context) -> Trained:
    from fedrec.core.federation.aggregation import ServerOptimizer, weighted_mean
    from fedrec.core.training.local_round import new_local_parameters
    from fedrec.core.models.explicit_mf import ExplicitMF
    from fedrec.core.training.ratings import (RatingTrainingConfig, initial_rating_arrays, pool_rating_metrics,
                                          train_rating_user, user_rating_metrics)
    from fedrec.core.federation.sampling import sample_users

    split, b, seed = _rating_split(ctx), ctx.budget, ctx.config.seed
    config = RatingTrainingConfig(lr=0.02, batch_size=32, l2=0.05)
    arrays = initial_rating_arrays("explicit-mf", split.n_items, RATING_DIM, seed, split.train_mean())
    server = ServerOptimizer("fedavg-slr", lr=10.0, scaled=frozenset(ExplicitMF.item_table_names))
    stored: dict[int, Arrays] = {}
    clients = min(b.rating_clients, split.n_users)
    trained_per_round = []
    for server_round in range(1, b.rating_rounds + 1):
        results = []
        for u in (int(u) for u in sample_users(split.n_users, clients, seed, server_round, "train")):
            user = split.user_ratings(u)
            if len(user.train_items) == 0:
                continue
            local = stored.get(u) or new_local_parameters("explicit-mf", split.n_items, RATING_DIM, seed, u)
            result = train_rating_user("explicit-mf", RATING_DIM, arrays, local, user, config, 2,
                                       np.random.default_rng([seed, u, server_round]), user_epochs=1)
            stored[u] = result.local
            results.append(result)
        arrays = server.step(arrays, weighted_mean([r.update for r in results], [r.num_examples for r in results]))
        trained_per_round.append(len(results))
    metrics = pool_rating_metrics([user_rating_metrics("explicit-mf", RATING_DIM, arrays, stored.get(u),
                                                       split.user_ratings(u), config, 3, seed)
                                   for u in range(split.n_users)])
    return Trained(f"FedAvg of explicit MF (train_rating_user): {b.rating_rounds} rounds × {clients} users, 1 "
                   "user-vector epoch + 2 local epochs, Adam lr 0.02, batch 32, per-rating L2 0.05, server lr 10 on "
                   "the item tables, μ started at the mean training rating; evaluation refits each user's vector "
                   "and bias for 3 epochs with the global part frozen",
                   metrics={"rmse": metrics["rmse"], "mae": metrics["mae"]},
                   bytes_sent=round_bytes(arrays, trained_per_round))


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class ModelRows:
    """One model of the comparison: its family and a builder per setting."""

    family: str
    rows: dict[str, RowBuilder]


def _registry_rows(model: str, family: str, dp: bool = False, mmr: bool = False) -> ModelRows:
    rows: dict[str, RowBuilder] = {CENTRAL: partial(_central_registry, model)}
    if mmr:
        rows[CENTRAL_MMR] = partial(_central_mmr, model)
    rows[FEDERATED] = partial(_federated_registry, model, "bce")
    if dp:
        rows[FEDERATED_DP] = partial(_federated_dp, model)
    return ModelRows(family, rows)


MODELS: dict[str, ModelRows] = {
    "itempop": ModelRows("popularity", {
        CENTRAL: partial(_central_baseline, lambda ctx: ItemPop(), "ItemPop: s(u, i) = training count of i"),
        FEDERATED: _federated_itempop}),
    "user-knn": ModelRows("neighbourhood", {
        CENTRAL: partial(_central_baseline, lambda ctx: UserKNN(k=50, shrink=10.0),
                         "UserKNN baseline: k = 50 neighbours, shrunk cosine (shrink 10)"),
        FEDERATED: _federated_userknn}),
    "item-knn": ModelRows("neighbourhood", {
        CENTRAL: partial(_central_baseline, lambda ctx: ItemKNN(k=50, shrink=10.0),
                         "ItemKNN baseline: k = 50 neighbours, shrunk cosine (shrink 10)"),
        FEDERATED: partial(_federated_itemknn, False), FEDERATED_DP: partial(_federated_itemknn, True)}),
    "bpr": ModelRows("matrix factorisation", {
        CENTRAL: _central_bpr, FEDERATED: partial(_federated_registry, "mf", "bpr")}),
    "mf": _registry_rows("mf", "matrix factorisation", dp=True, mmr=True),
    "gmf": _registry_rows("gmf", "neural"),
    "mlp": _registry_rows("mlp", "neural"),
    "neumf": _registry_rows("neumf", "neural"),
    "hybrid": _registry_rows("hybrid", "feature-based"),
    "content": _registry_rows("content", "feature-based"),
    "sequence": ModelRows("sequence", {CENTRAL: _central_sequence, FEDERATED: _federated_sequence}),
    "explicit-mf": ModelRows("explicit rating", {CENTRAL: _central_rating, FEDERATED: _federated_rating}),
}
DEFAULT_MODELS = tuple(MODELS)
# The cold-start section re-trains these (model, setting) rows on the cold-start split.
COLD_START_ROWS = (("itempop", CENTRAL), ("item-knn", CENTRAL), ("mf", CENTRAL), ("hybrid", CENTRAL),
                   ("content", CENTRAL), ("mf", FEDERATED), ("hybrid", FEDERATED), ("content", FEDERATED))


# --------------------------------------------------------------------------- cold start


@dataclass(frozen=True)
class ColdStartSplit:
    """The leave-one-out split with simulated cold users and new items.

    Attributes:
        split: training lists without the new items, cold users' lists cut to their
            latest ``max_train_items``; validation and test items unchanged.
        cold_users: evaluated users with ≤ ``max_train_items`` training items.
        warm_users: the other evaluated users.
        new_items: items removed from every training list (never a validation or test item).
        new_item_users: users who held a new item in training.
        new_item_truth: per ``new_item_users`` entry, the new items that user held.
        max_train_items: N.
    """

    split: LeaveOneOutSplit
    cold_users: NDArray[np.int64]
    warm_users: NDArray[np.int64]
    new_items: NDArray[np.int64]
    new_item_users: NDArray[np.int64]
    new_item_truth: list[NDArray[np.int64]]
    max_train_items: int


def make_cold_start_split(split: LeaveOneOutSplit, max_train_items: int, user_fraction: float,
                          item_fraction: float, seed: int) -> ColdStartSplit:
    """New items: ``⌈item_fraction · n_items⌉`` items drawn (seeded) among those with 3 to
    median training users that are nobody's validation or test item, removed from every
    training list. Cold users: ``user_fraction`` of the evaluated users with more than
    ``max_train_items`` training items keep only their latest ``max_train_items`` (the CSR
    order is time order); with users who already had that few, they form ``cold_users``.
    """
    rng = np.random.default_rng([seed, COLD_START_STREAM])
    counts = np.bincount(split.train_items, minlength=split.n_items)
    held_out = np.union1d(split.validation_item[split.validation_item != NO_ITEM],
                          split.test_item[split.test_item != NO_ITEM])
    median = float(np.median(counts[counts > 0])) if np.any(counts > 0) else 0.0
    candidates = np.setdiff1d(np.flatnonzero((counts >= 3) & (counts <= max(median, 3))), held_out)
    n_new = min(len(candidates), int(np.ceil(item_fraction * split.n_items)))
    new_items = np.sort(rng.choice(candidates, size=n_new, replace=False)).astype(np.int64)
    is_new = np.zeros(split.n_items, dtype=bool)
    is_new[new_items] = True

    lists = [split.train_items_of(u) for u in range(split.n_users)]
    truth_users, truth = [], []
    for u, items in enumerate(lists):
        if is_new[items].any():
            truth_users.append(u)
            truth.append(np.unique(items[is_new[items]]))
            lists[u] = items[~is_new[items]]
    evaluated = split.evaluated_users()
    longer = np.array([u for u in evaluated if len(lists[u]) > max_train_items], dtype=np.int64)
    n_cut = min(len(longer), int(round(user_fraction * len(evaluated))))
    for u in rng.choice(longer, size=n_cut, replace=False) if n_cut else []:
        lists[int(u)] = lists[int(u)][-max_train_items:]
    sizes = np.array([len(items) for items in lists], dtype=np.int64)
    cold_split = replace(split, train_indptr=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                         train_items=np.concatenate(lists).astype(np.int64) if lists else split.train_items[:0])
    cold = evaluated[sizes[evaluated] <= max_train_items]
    return ColdStartSplit(cold_split, cold.astype(np.int64), np.setdiff1d(evaluated, cold).astype(np.int64),
                          new_items, np.asarray(truth_users, dtype=np.int64), truth, max_train_items)


def new_item_metrics(scorer: Scorer, cold: ColdStartSplit, k: int, seed: int = 0) -> dict[str, float]:
    """Each new-item user ranks all new items by score; mean AUC, HR@K and R@K of its own new items.

    AUC of a user = P(score of a held new item > score of a not-held one), ties ½ (NaN
    when the user held every new item). The top K break score ties in a random order
    (generator ``(seed, user, NEW_ITEM_TIE_STREAM)``), so a model that scores every new
    item alike ranks them at random rather than by item id. ``new_item_random_recall@K``
    = ``min(K, m)/m`` for ``m`` new items, what a random order gives.
    """
    m = len(cold.new_items)
    if m == 0 or len(cold.new_item_users) == 0:
        return {}
    position = {int(item): j for j, item in enumerate(cold.new_items)}
    aucs, hits, recalls = [], [], []
    batch = 256
    for start in range(0, len(cold.new_item_users), batch):
        users = cold.new_item_users[start:start + batch]
        scores = np.asarray(scorer.score_users(users))[:, cold.new_items]
        for j, truth in enumerate(cold.new_item_truth[start:start + batch]):
            relevant = np.array([position[int(i)] for i in truth])
            tie_order = np.random.default_rng([seed, int(users[j]), NEW_ITEM_TIE_STREAM]).permutation(m)
            ranked = np.lexsort((tie_order, -scores[j]))[:k]  # by score, ties at random
            hits.append(list_hit_ratio_at_k(ranked, relevant, k))
            recalls.append(list_recall_at_k(ranked, relevant, k))
            aucs.append(_auc(scores[j], relevant))
    return {"new_item_auc": float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan"),
            f"new_item_hr@{k}": float(np.mean(hits)), f"new_item_recall@{k}": float(np.mean(recalls)),
            f"new_item_random_recall@{k}": min(k, m) / m, "new_item_users": float(len(cold.new_item_users))}


def _auc(scores: NDArray[np.floating], relevant: NDArray[np.intp]) -> float:
    """Mann–Whitney AUC of the ``relevant`` positions against the rest, ties ½."""
    mask = np.zeros(len(scores), dtype=bool)
    mask[relevant] = True
    positive, negative = scores[mask], scores[~mask]
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positive) * len(negative)))


# --------------------------------------------------------------------------- orchestration


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
        "federated": ("federated rows of the registry models (mf, gmf, mlp, neumf, hybrid, content, bpr = MF with "
                      "the BPR loss) run fedrec.simulations.torch_loop.run_torch_loop — the same per-user "
                      "arithmetic, sampling and aggregation as the Flower apps, in one process, without Flower "
                      "(no serialisation or Ray overhead in the seconds). Each federated user is scored as its "
                      "client scores it: its vector refitted on its own items with the global part frozen."),
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
