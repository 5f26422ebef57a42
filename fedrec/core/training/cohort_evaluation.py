"""Vectorised evaluation: every user of a cohort scored in one batched pass.

Each user is evaluated exactly as :func:`fedrec.core.training.local_round.user_metrics`
evaluates it on a client:

1. its vector (stored, or a seeded fresh one) is fitted for ``reconstruct-epochs`` on its
   own training items with the global part frozen (generator ``(seed, user, 31)``);
2. with ``personal`` ``tune`` (:mod:`fedrec.core.models.personal`), its local part and its
   own copy of the global part are then fine-tuned together for ``tune-epochs`` (generator
   ``(seed, user, 37)``; the arithmetic of a round's second phase,
   :func:`fedrec.core.training.cohort.train_all_parameters`);
3. every item is scored — with the shared global part, or with the user's tuned copy (its
   touched item rows written over the shared tables) — and ranked
   (:func:`fedrec.core.evaluation.protocols.evaluate_user`, with the validation item when
   the run selects its model by validation).

Memory: without tuning, a chunk holds ``(B, n_items)`` scores; with tuning, each user also
holds its copy of the global part (and Adam's moments) while it trains and a full
``(n_items, d)`` table per item table while it scores, so chunks are cut to
:data:`TUNE_CHUNK_USERS` users.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch.func import functional_call, vmap

from fedrec.core.arrays import Arrays, Tensors
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.split import UserData
from fedrec.core.evaluation.protocols import evaluate_user
from fedrec.core.models.base import Recommender
from fedrec.core.models.personal import TUNE_SEED_TAG, personal_parts
from fedrec.core.models.run_model import build_run_model, run_item_features
from fedrec.core.training.cohort import (
    _item_buffers,
    _plans,
    _run_phase,
    _schedule,
    _stack,
    train_all_parameters,
)
from fedrec.core.training.implicit import negative_key
from fedrec.core.training.local_round import new_local_parameters

TUNE_CHUNK_USERS = 64


def cohort_metrics(
    config: RunConfig,
    global_arrays: Arrays,
    stored_locals: Sequence[Arrays | None],
    users: Sequence[UserData],
    chunk_size: int = 4096,
    device: str | torch.device = "cpu",
) -> list[dict[str, float]]:
    """Each user's ranking metrics as :func:`~fedrec.core.training.local_round.user_metrics` computes them."""
    if len(stored_locals) != len(users):
        raise ValueError("one stored-locals entry per user is required")
    if not users:
        return []
    n_items = users[0].n_items
    model = build_run_model(config, 1, n_items)
    features = run_item_features(config)
    training = config.training
    tune = "tune" in personal_parts(config.personal) and config.tune_epochs > 0
    validation = config.evaluation.validation
    shared = {k: torch.from_numpy(np.asarray(global_arrays[k], dtype=np.float32)).to(device)
              for k in model.global_parameter_names}
    buffers = _item_buffers(model, device)
    # the global part and the item buffers, whole: nothing is renumbered when scoring
    frozen = {**shared, **buffers}
    rows: list[dict[str, float]] = [{} for _ in users]
    order = sorted(range(len(users)), key=lambda b: (-len(users[b].train_items), b))
    if tune:
        chunk_size = min(chunk_size, TUNE_CHUNK_USERS)
    for start in range(0, len(order), chunk_size):
        chunk = order[start:start + chunk_size]
        data = [users[b] for b in chunk]
        locals_ = [stored_locals[b] if stored_locals[b] is not None else
                   new_local_parameters(config.model, n_items, config.dim, config.seed, users[b].user, features,
                                        config.personal)
                   for b in chunk]
        local_t = _stack(locals_, model.local_parameter_names, device)
        keys = [negative_key(u, config.train_negatives) for u in data]
        if config.reconstruct_epochs > 0:
            plans = [_plans(u, key, np.random.default_rng([config.seed, u.user, 31]), training,
                            config.reconstruct_epochs) for u, key in zip(data, keys)]
            _run_phase(model, local_t, frozen, False,
                       _schedule(plans, training.batch_size, training.negatives, device), training)
        if tune:
            plans = [_plans(u, key, np.random.default_rng([config.seed, u.user, TUNE_SEED_TAG]), training,
                            config.tune_epochs) for u, key in zip(data, keys)]
            # a user without training items has an empty plan: its copy does not move
            compact = training.weight_decay == 0 and bool(model.item_table_names) and all(len(p) for p in plans)
            copies, touched, _ = train_all_parameters(model, local_t, shared, buffers, plans, config.tuning,
                                                      compact, device)
            tuned = _full_copies(shared, copies, touched, model.item_table_names)
            scores = _score_all(model, {**local_t, **tuned}, buffers, n_items)
        else:
            scores = _score_all(model, local_t, frozen, n_items)
        for j, b in enumerate(chunk):
            rows[b] = evaluate_user(scores[j], users[b], config.eval_k, validation=validation)
    return rows


def _full_copies(shared: Tensors, copies: Tensors, rows: list[NDArray[np.int64]] | None,
                 item_tables: Sequence[str]) -> Tensors:
    """Each user's whole tuned global part: its touched rows written over the shared item tables."""
    if rows is None:
        return copies
    full = {}
    for name, copy in copies.items():
        if name not in item_tables:
            full[name] = copy
            continue
        table = shared[name].expand(len(rows), *shared[name].shape).clone()
        for j, r in enumerate(rows):
            table[j, torch.from_numpy(r).to(table.device)] = copy[j, :len(r)]
        full[name] = table
    return full


@torch.no_grad()
def _score_all(model: Recommender, per_user: Tensors, frozen: Tensors, n_items: int) -> NDArray[np.float32]:
    """``(B, n_items)`` logits of every user of the chunk for every item. ``per_user``: stacked
    parameters of each user (its local part, and its tuned global part if any); ``frozen``:
    what all users share (the global part, the item buffers)."""
    device = next(iter(per_user.values())).device
    items = torch.arange(n_items, device=device)
    zeros = torch.zeros_like(items)

    def score(own: Tensors) -> torch.Tensor:
        return functional_call(model, {**frozen, **own}, (zeros, items))

    model.eval()
    return vmap(score)(per_user).cpu().numpy()
