"""The ``central`` and ``central + MMR`` rows of ``fedrec compare``: each model trained in
one place (the baselines of :mod:`fedrec.core.baselines`, the registry models through
:func:`fedrec.core.training.central.train_central`, SASRec through
:func:`fedrec.core.training.sequence.train_sequence_central`, explicit MF through
:func:`fedrec.core.training.ratings.train_rating_central`)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from fedrec.core.baselines import BPR, BPRConfig, Scorer
from fedrec.core.baselines.scorer import RecommenderScorer
from fedrec.core.training.central import CentralConfig, train_central
from fedrec.core.training.implicit import TrainingConfig
from fedrec.simulations.compare.config import RATING_DIM, RATING_TEST_FRACTION
from fedrec.simulations.compare.context import (
    Context,
    NotAvailable,
    Trained,
    check_features,
    rating_split,
    sequence_modules,
)
from fedrec.simulations.compare.report import CENTRAL
from fedrec.simulations.compare.scorers import MMRScorer, SequenceScorer

MMR_LAMBDA, MMR_POOL = 0.5, 100
SASREC = dict(dim=32, max_len=50, blocks=1, heads=1, dropout=0.2)  # the architecture of both SASRec rows


def central_baseline(make: Callable[[Context], Scorer], details: str, ctx: Context) -> Trained:
    return Trained(details, scorer=make(ctx).fit(ctx.split))


def central_bpr(ctx: Context) -> Trained:
    config = BPRConfig(dim=32, epochs=ctx.budget.bpr_epochs, seed=ctx.config.seed)
    return Trained(f"BPR baseline: MF with d = {config.dim}, {config.epochs} epochs, Adam lr {config.lr:g}, "
                   f"batch {config.batch_size}, one sampled negative per positive, L2 {config.reg:g}",
                   scorer=BPR(config).fit(ctx.split))


def central_registry(model: str, ctx: Context) -> Trained:
    check_features(model, ctx)
    c, b = ctx.config, ctx.budget
    training = TrainingConfig(lr=0.001, batch_size=256)
    trained, _ = train_central(ctx.split, CentralConfig(model=model, dim=32, epochs=b.central_epochs, seed=c.seed,
                                                        eval_every=b.central_epochs, k=c.k, training=training,
                                                        dataset=c.dataset, data_dir=c.data_dir))
    scorer = RecommenderScorer(trained).fit(ctx.split)
    ctx.scorers[(model, CENTRAL)] = scorer
    return Trained(f"train_central: d = 32, {b.central_epochs} epochs, Adam lr 1e-3, batch 256, BCE with "
                   f"{training.negatives} sampled negatives per positive", scorer=scorer)


def central_mmr(model: str, ctx: Context) -> Trained:
    base = ctx.scorers.get((model, CENTRAL))
    trained_here = base is None
    if base is None:
        base = central_registry(model, ctx).scorer
    table = getattr(getattr(base, "model", None), "item_embedding", None)
    if table is None:
        raise NotAvailable(f"MMR re-ranks with the model's item embeddings; {model} has none")
    vectors = table.weight.detach().numpy().astype(np.float64)
    scorer = MMRScorer(base, vectors, ctx.config.k, MMR_LAMBDA, MMR_POOL).fit(ctx.split)
    source = "trained here as in the central row" if trained_here else "the central row's model"
    return Trained(f"MMR re-ranking (λ = {MMR_LAMBDA:g}, pool = top {MMR_POOL}, cosine of the model's item "
                   f"embeddings) of {source}; seconds = re-ranking and evaluation", scorer=scorer)


def central_sequence(ctx: Context) -> Trained:
    sequence, training = sequence_modules()
    config = sequence.SASRecConfig(**SASREC)
    epochs = ctx.budget.sequence_epochs
    model, _ = training.train_sequence_central(
        ctx.split, config, training.SequenceTrainingConfig(lr=0.005, batch_size=64), epochs=epochs,
        seed=ctx.config.seed, eval_every=epochs, k=ctx.config.k)
    return Trained(f"train_sequence_central: SASRec {SASREC}, {epochs} epochs, Adam lr 0.005, batch 64 windows, "
                   "BCE with 1 negative per target; scores the next item after training + validation items",
                   scorer=SequenceScorer(model).fit(ctx.split))


def central_rating(ctx: Context) -> Trained:
    from fedrec.core.models.registry import build_model
    from fedrec.core.training.ratings import (
        RatingTrainingConfig,
        evaluate_rating_model,
        global_mean_metrics,
        train_rating_central,
    )

    split = rating_split(ctx)
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
