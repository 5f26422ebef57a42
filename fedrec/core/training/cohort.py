"""Vectorised local rounds: a cohort of users trained in one batched pass.

Each user of a cohort does exactly the arithmetic of
:func:`fedrec.core.training.local_round.user_round` — the same generator ``(seed, user,
round)``, hence the same negatives and batch order (:func:`fedrec.core.training.implicit.epoch_plan`),
the same phases (``user-epochs`` on the user vector with the global part frozen, then
``local-epochs`` on everything, each phase with a fresh optimiser), the same loss — but
all users advance together:

* parameters are **stacked**: user ``b`` owns row ``b`` of every trainable tensor
  (its user vector and, in the second phase, its own copy of the global part);
* the per-user loss ``L_b(θ_b)`` of step ``t`` is evaluated for every active user at
  once with ``torch.func.vmap`` over ``functional_call`` of the registered model, and
  ``∇_θb L_b`` comes from ``vmap(grad(L))`` — one user's gradient never mixes with
  another's, because their parameters are distinct;
* the optimiser is written out on stacked tensors (Adam:
  ``m ← β1 m + (1−β1) g``, ``v ← β2 v + (1−β2) g²``,
  ``θ ← θ − η/(1−β1^k) · m / (√(v/(1−β2^k)) + ε)``, with ``g ← g + λθ`` for weight
  decay, as ``torch.optim.Adam``; SGD: ``θ ← θ − η (g + λθ)``).

Users are sorted by their number of optimiser steps (``epochs · ⌈n_b / batch⌉``, the
same for both phases' ordering), so at step ``t`` the users still training are a
prefix of the chunk: work is spent only on them, and every active user has taken the
same number of steps (one bias correction for all). A user whose last batch is
smaller than ``batch-size`` has its padded examples masked out of its mean loss, so
its loss and gradient are those of the real, smaller batch.

In the second phase (without weight decay) each user carries only the rows of the item
tables its batches touch, and its items are renumbered into those rows. The model's
item-indexed buffers (``item_buffer_names``: a feature model's ``F (n_items, F)``) are
cut to the same rows and passed to ``functional_call`` as a frozen per-user input, so
renumbered item ``r`` reads the features of the item it stands for. In every other
phase and in scoring the buffers go in whole, on the executor's device.

Memory: in the second phase each user of a chunk carries its own copy of the global
part and two optimiser moments plus a gradient, ``≈ 4 |θ_g|`` floats; the cohort is cut
into chunks whose total stays under ``memory_budget_bytes``. The weighted sum of the
updates ``Σ_b n_b Δ_b`` is accumulated chunk by chunk, so a node's memory does not
grow with the number of users it trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F

from fedrec.core.arrays import Arrays, Tensors
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.split import UserData
from fedrec.core.models.base import Recommender
from fedrec.core.models.run_model import build_run_model, run_item_features
from fedrec.core.training.implicit import TrainingConfig, epoch_plan, negative_key
from fedrec.core.training.local_round import new_local_parameters

DEFAULT_MEMORY_BUDGET_BYTES = 1 << 30  # per node, for the stacked copies of the global part
# Users per chunk: users of a chunk are padded to the chunk's widest item-row set and
# longest schedule, so chunks of users with similar amounts of data waste little.
DEFAULT_CHUNK_USERS = 64
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass
class CohortResult:
    """What a cohort's round produced (users in the order given)."""

    update_sum: Arrays  # Σ_b n_b Δ_b over the trained users
    weight: float  # Σ_b n_b (positives + sampled negatives seen)
    users: list[int]  # dense ids of the users that trained (those with training items)
    locals: list[Arrays]  # their new private parameters, same order
    num_examples: list[int]
    losses: list[float]
    updates: list[Arrays] | None = None  # per-user Δ_b, only when asked for (tests)

    @property
    def mean_update(self) -> Arrays:
        """``Σ n_b Δ_b / Σ n_b``: the example-weighted mean the strategy expects."""
        if self.weight <= 0:
            raise ValueError("no user of the cohort trained")
        return {k: (v / self.weight).astype(np.float32) for k, v in self.update_sum.items()}

    @property
    def mean_loss(self) -> float:
        if not self.losses:
            return 0.0
        return float(np.average(self.losses, weights=self.num_examples))


@dataclass
class _Schedule:
    """Padded batches of one phase for a chunk: ``(B, S, batch)`` positives and masks."""

    positives: torch.Tensor  # (B, S, batch) int64
    negatives: torch.Tensor  # (B, S, batch, k) int64
    mask: torch.Tensor  # (B, S, batch) float: 1 for a real example
    steps: list[int]  # real steps of each user (non-increasing)


def _schedule(plans: list[list[tuple[NDArray[np.int64], NDArray[np.int64]]]], batch: int, k: int,
              device: str | torch.device = "cpu") -> _Schedule:
    """Cut each user's epochs into batches as ``train_epoch`` does and pad them."""
    steps = [sum(math.ceil(len(pos) / batch) for pos, _ in plan) for plan in plans]
    n_users, n_steps = len(plans), max(steps) if steps else 0
    positives = np.zeros((n_users, n_steps, batch), dtype=np.int64)
    negatives = np.zeros((n_users, n_steps, batch, k), dtype=np.int64)
    mask = np.zeros((n_users, n_steps, batch), dtype=np.float32)
    for b, plan in enumerate(plans):
        t = 0
        for pos, neg in plan:
            for start in range(0, len(pos), batch):
                size = min(batch, len(pos) - start)
                positives[b, t, :size] = pos[start:start + size]
                negatives[b, t, :size] = neg[start:start + size]
                mask[b, t, :size] = 1.0
                t += 1
    return _Schedule(torch.from_numpy(positives).to(device), torch.from_numpy(negatives).to(device),
                     torch.from_numpy(mask).to(device), steps)


def _masked_loss(model: Recommender, loss_kind: str):
    """``L(trainable, frozen, pos, neg, mask)``: one user's mean loss over its real examples."""

    def loss(trainable: Tensors, frozen: Tensors, pos: torch.Tensor, neg: torch.Tensor,
             mask: torch.Tensor) -> torch.Tensor:
        params = {**frozen, **trainable}
        k = neg.shape[-1]
        zeros = torch.zeros_like(pos)
        pos_scores = functional_call(model, params, (zeros, pos))
        neg_scores = functional_call(model, params, (zeros.repeat_interleave(k), neg.reshape(-1))).view(-1, k)
        count = mask.sum()
        if loss_kind == "bce":
            scores = torch.cat([pos_scores[:, None], neg_scores], dim=1)
            labels = torch.zeros_like(scores)
            labels[:, 0] = 1.0
            per_example = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
            return (per_example * mask[:, None]).sum() / torch.clamp(count * (1 + k), min=1.0)
        per_pair = -F.logsigmoid(pos_scores[:, None] - neg_scores)
        return (per_pair * mask[:, None]).sum() / torch.clamp(count * k, min=1.0)

    return loss


class _StackedOptimizer:
    """Per-user Adam or SGD over stacked tensors; users ``[:active]`` step together."""

    def __init__(self, params: Tensors, config: TrainingConfig) -> None:
        self.params = params
        self.config = config
        self.step_count = 0
        if config.optimizer == "adam":
            self.exp_avg = {k: torch.zeros_like(v) for k, v in params.items()}
            self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in params.items()}

    @torch.no_grad()
    def step(self, grads: Tensors, active: int) -> None:
        """One step of the first ``active`` users (all of them at step ``step_count + 1``)."""
        self.step_count += 1
        lr, decay = self.config.lr, self.config.weight_decay
        for name, g in grads.items():
            p = self.params[name][:active]
            if decay:
                g = g.add(p, alpha=decay)
            if self.config.optimizer == "sgd":
                p.add_(g, alpha=-lr)
                continue
            beta1, beta2 = ADAM_BETAS
            m, v = self.exp_avg[name][:active], self.exp_avg_sq[name][:active]
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            bias1 = 1 - beta1 ** self.step_count
            bias2_sqrt = math.sqrt(1 - beta2 ** self.step_count)
            denom = (v.sqrt() / bias2_sqrt).add_(ADAM_EPS)
            p.addcdiv_(m, denom, value=-lr / bias1)


def _run_phase(model: Recommender, trainable: Tensors, frozen: Tensors, frozen_batched: bool,
               schedule: _Schedule, config: TrainingConfig) -> torch.Tensor:
    """Train ``trainable`` (stacked) through the schedule; returns each user's Σ loss·batch."""
    n_users = len(schedule.steps)
    loss_sums = torch.zeros(n_users, dtype=torch.float64, device=schedule.mask.device)
    if n_users == 0:
        return loss_sums
    optimizer = _StackedOptimizer(trainable, config)
    step_fn = vmap(grad_and_value(_masked_loss(model, config.loss)),
                   in_dims=(0, 0 if frozen_batched else None, 0, 0, 0))
    steps = np.asarray(schedule.steps)
    for t in range(int(steps.max(initial=0))):
        active = int((steps > t).sum())  # users are sorted by steps: a prefix is active
        grads, losses = step_fn(
            {k: v[:active] for k, v in trainable.items()},
            {k: v[:active] for k, v in frozen.items()} if frozen_batched else frozen,
            schedule.positives[:active, t], schedule.negatives[:active, t], schedule.mask[:active, t],
        )
        optimizer.step(grads, active)
        loss_sums[:active] += losses.detach().double() * schedule.mask[:active, t].sum(1).double()
    return loss_sums


def _touched_rows(plans: list[list[tuple[NDArray[np.int64], NDArray[np.int64]]]]) -> list[NDArray[np.int64]]:
    """Sorted item ids each user's batches use (positives and sampled negatives)."""
    return [np.unique(np.concatenate([np.concatenate([pos, neg.ravel()]) for pos, neg in plan]))
            for plan in plans]


def _row_index(rows: list[NDArray[np.int64]], device: str | torch.device) -> torch.Tensor:
    """``(B, width)`` item ids of each user's ``rows``, padded with row 0 (which no batch
    of a padded position references, so its padding is never read for a loss)."""
    width = max(len(r) for r in rows)
    index = np.zeros((len(rows), width), dtype=np.int64)
    for j, r in enumerate(rows):
        index[j, :len(r)] = r
    return torch.from_numpy(index).to(device)


def _global_copies(shared: Tensors, item_tables: Sequence[str], rows: list[NDArray[np.int64]] | None,
                   n_users: int) -> Tensors:
    """Each user's own trainable copy of the global part, stacked on a leading axis.

    Item tables in ``item_tables`` are cut to the user's ``rows`` (padded with row 0,
    which no batch references, so its padding never moves); the rest are full copies.
    """
    copies = {}
    for name, value in shared.items():
        if rows is not None and name in item_tables:
            copies[name] = value[_row_index(rows, value.device)].clone()
        else:
            copies[name] = value.expand(n_users, *value.shape).clone()
    return copies


def _item_buffers(model: Recommender, device: str | torch.device) -> Tensors:
    """The model's item-indexed buffers (``item_buffer_names``), whole, on ``device``."""
    buffers = dict(model.named_buffers())
    return {name: buffers[name].to(device) for name in model.item_buffer_names}


def _cut_buffers(buffers: Tensors, rows: list[NDArray[np.int64]]) -> Tensors:
    """Each user's rows of every item buffer, stacked: ``(B, width, …)``, in the order of ``rows``."""
    return {name: value[_row_index(rows, value.device)] for name, value in buffers.items()}


def _stack(rows: list[Arrays], names: Sequence[str], device: str | torch.device = "cpu") -> Tensors:
    return {name: torch.from_numpy(np.stack([row[name] for row in rows]).astype(np.float32)).to(device)
            for name in names}


def _chunks(order: list[int], per_user_bytes: int, budget: int, max_size: int) -> list[list[int]]:
    """Consecutive users of ``order`` (sorted by work) in chunks that fit the memory budget."""
    size = max(1, min(max_size, budget // max(per_user_bytes, 1)))
    return [order[i:i + size] for i in range(0, len(order), size)]


def cohort_round(
    config: RunConfig,
    global_arrays: Arrays,
    stored_locals: Sequence[Arrays | None],
    users: Sequence[UserData],
    server_round: int,
    keep_updates: bool = False,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    chunk_size: int = DEFAULT_CHUNK_USERS,
    device: str | torch.device = "cpu",
    update_transform: Callable[[Arrays], Arrays] | None = None,
) -> CohortResult:
    """Train every user of ``users`` as :func:`~fedrec.core.training.local_round.user_round` would.

    ``stored_locals[b]`` is user ``b``'s stored private parameters or ``None`` (a fresh,
    seeded vector). Users without training items are skipped, as on a client. The
    stacked tensors live on ``device``; batches are planned on the CPU (the users'
    generators), and results come back once per chunk.

    ``update_transform`` (the user-level DP mechanisms): each user's dense ``Δ_b`` is
    replaced by ``transform(Δ_b)`` before it is summed, and every user weighs 1
    (``Σ_b transform(Δ_b)``, weight = number of users).
    """
    if len(stored_locals) != len(users):
        raise ValueError("one stored-locals entry per user is required")
    if not users:
        return empty_result(global_arrays)
    n_items = users[0].n_items
    model = build_run_model(config, 1, n_items)
    features = run_item_features(config)
    global_names, local_names = model.global_parameter_names, model.local_parameter_names
    training = config.training
    start = {k: np.asarray(global_arrays[k], dtype=np.float32) for k in global_names}
    shared = {k: torch.from_numpy(v).to(device) for k, v in start.items()}
    buffers = _item_buffers(model, device)

    trained = [b for b, u in enumerate(users) if len(u.train_items) > 0]
    order = sorted(trained, key=lambda b: (-len(users[b].train_items), b))
    per_user_bytes = 4 * sum(v.numel() * 4 for v in shared.values())
    # An item row that no batch of a user's phase touches has a zero gradient, hence zero
    # Adam moments and no SGD step: only touched rows can move, unless weight decay
    # (g ← g + λθ) makes every row's gradient non-zero. Each user then carries only its
    # touched rows of the item tables, which is the same arithmetic on fewer rows.
    compact = training.weight_decay == 0 and bool(model.item_table_names)
    result = empty_result(global_arrays)
    kept: dict[int, tuple[Arrays, int, float, Arrays | None]] = {}
    for chunk in _chunks(order, per_user_bytes, memory_budget_bytes, chunk_size):
        data = [users[b] for b in chunk]
        locals_ = [stored_locals[b] if stored_locals[b] is not None else
                   new_local_parameters(config.model, n_items, config.dim, config.seed, users[b].user, features,
                                        config.personal)
                   for b in chunk]
        rngs = [np.random.default_rng([config.seed, u.user, server_round]) for u in data]
        keys = [negative_key(u, config.train_negatives) for u in data]
        local_t = _stack(locals_, local_names, device)
        if config.user_epochs > 0:
            plans = [_plans(u, key, rng, training, config.user_epochs) for u, key, rng in zip(data, keys, rngs)]
            _run_phase(model, local_t, {**shared, **buffers}, False,
                       _schedule(plans, training.batch_size, training.negatives, device), training)
        plans = [_plans(u, key, rng, training, config.local_epochs) for u, key, rng in zip(data, keys, rngs)]
        copies, rows, loss_sums = train_all_parameters(model, local_t, shared, buffers, plans, training, compact,
                                                       device)
        final = {k: v.cpu().numpy() for k, v in copies.items()}  # one transfer per chunk
        final_local = {k: v.cpu().numpy() for k, v in local_t.items()}
        sums = loss_sums.cpu().numpy()
        for j, b in enumerate(chunk):
            n = len(users[b].train_items)
            examples = config.local_epochs * n * (1 + training.negatives)
            delta: Arrays = {}
            if update_transform is not None:
                delta = update_transform(_dense_delta(final, start, rows[j] if rows is not None else None,
                                                      j, global_names, model.item_table_names))
                for k in global_names:
                    result.update_sum[k] += delta[k]
                result.weight += 1
            else:
                for k in global_names:
                    if rows is not None and k in model.item_table_names:
                        r = rows[j]
                        delta_rows = final[k][j, :len(r)] - start[k][r]
                        result.update_sum[k][r] += examples * delta_rows
                        if keep_updates:
                            delta[k] = np.zeros_like(start[k])
                            delta[k][r] = delta_rows
                    else:
                        delta[k] = final[k][j] - start[k]
                        result.update_sum[k] += examples * delta[k]
                result.weight += examples
            loss = float(sums[j]) / (n * config.local_epochs)
            kept[b] = ({k: final_local[k][j].copy() for k in local_names}, examples, loss,
                       delta if keep_updates else None)
    for b in trained:  # report in the caller's order
        local, examples, loss, delta = kept[b]
        result.users.append(users[b].user)
        result.locals.append(local)
        result.num_examples.append(examples)
        result.losses.append(loss)
        if keep_updates:
            assert delta is not None
            result.updates = (result.updates or []) + [delta]
    return result


Plans = list[list[tuple[NDArray[np.int64], NDArray[np.int64]]]]


def train_all_parameters(model: Recommender, local_t: Tensors, shared: Tensors, buffers: Tensors, plans: Plans,
                         training: TrainingConfig, compact: bool, device: str | torch.device,
                         ) -> tuple[Tensors, list[NDArray[np.int64]] | None, torch.Tensor]:
    """Train each user's local part (``local_t``, in place) and its own copy of the global part
    through its ``plans``: the second phase of a round, and post-tuning before scoring.

    With ``compact``, the item tables of a user's copy hold only the rows its batches touch
    (``rows[j]``, sorted; its items renumbered into them). Returns (copies, rows or ``None``,
    each user's Σ loss·batch).
    """
    rows = _touched_rows(plans) if compact else None
    frozen, frozen_batched = buffers, False
    if rows is not None:
        plans = [[(np.searchsorted(r, pos), np.searchsorted(r, neg)) for pos, neg in plan]
                 for plan, r in zip(plans, rows)]
        # renumbered item r of user j is item rows[j][r]: its buffer rows must follow
        frozen, frozen_batched = _cut_buffers(buffers, rows), bool(buffers)
    copies = _global_copies(shared, model.item_table_names if compact else (), rows, len(plans))
    loss_sums = _run_phase(model, {**local_t, **copies}, frozen, frozen_batched,
                           _schedule(plans, training.batch_size, training.negatives, device), training)
    return copies, rows, loss_sums


def _dense_delta(final: Arrays, start: Arrays, rows: NDArray[np.int64] | None, j: int,
                 global_names: tuple[str, ...], item_tables: tuple[str, ...]) -> Arrays:
    """User ``j``'s full ``Δ`` (zeros on the item rows it did not carry)."""
    delta = {}
    for k in global_names:
        if rows is not None and k in item_tables:
            delta[k] = np.zeros_like(start[k])
            delta[k][rows] = final[k][j, :len(rows)] - start[k][rows]
        else:
            delta[k] = final[k][j] - start[k]
    return delta


def _plans(user: UserData, key: NDArray[np.int64], rng: np.random.Generator, config: TrainingConfig,
           epochs: int) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """The user's ``epochs`` epochs of (positives, negatives) in order, drawn from its generator."""
    if len(user.train_items) == 0:
        return []
    zeros = np.zeros(len(user.train_items), dtype=np.int64)
    plans = []
    for _ in range(epochs):
        _, positives, negatives = epoch_plan(zeros, user.train_items, key, user.n_items, config.negatives, rng)
        plans.append((positives, negatives))
    return plans


def empty_result(global_arrays: Arrays) -> CohortResult:
    return CohortResult({k: np.zeros_like(v, dtype=np.float64) for k, v in global_arrays.items()},
                        0.0, [], [], [], [])
