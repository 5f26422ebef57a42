"""``dp record`` for a cohort of users at once: the arithmetic of :func:`~fedrec.core.privacy.record_level.train_user_private`, vectorised.

Each user of the cohort runs exactly the per-client DP-SGD round of
:mod:`fedrec.core.privacy.record_level` — FedRecon's two phases (``user_epochs`` on the
local part with the global part frozen, then ``local_epochs`` on everything, each with a
fresh optimiser), ``⌈1/q⌉`` Poisson steps an epoch on the public schedule, per-example
gradients over the phase's trained parameters clipped **jointly** to ``C``, the sum plus
``N(0, σ²C²)`` on every trained coordinate divided by the public ``b`` — and draws its
randomness from its **own** :class:`~fedrec.core.privacy.secure_random.SecureRandom` in
the same order as the per-client path (per step: the Poisson mask, the negatives, then one
normal draw over the trained parameters in the optimiser's order), so with the same keys
the two paths release the same updates (up to float32 rounding: tested).

What is vectorised. Every user holds its own copy of every parameter (stacked: user ``j``
owns row ``j``); at each step the sampled examples of all users are evaluated at once,
``vmap(grad(ℓ))`` over ``functional_call`` with each example's own user's parameters (its
``1 + k`` item rows, its dense layers, its local part), so one user's gradient never mixes
with another's. An item table's per-example gradient is its gathered rows (the norm sums
repeated items first, :func:`fedrec.core.privacy.record_gradients.shared_norms`'s Gram
form). The summed gradients, the noise and the optimiser (Adam or SGD written out on the
stacked tensors, :class:`fedrec.core.training.cohort._StackedOptimizer`) are per user.

Cost. The noise is what it is per user: one float64 normal per trained coordinate per step
(≈ 55k a step for MF at ML-100K sizes), drawn from the user's ChaCha20 stream.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

from fedrec.core.arrays import Arrays, Tensors
from fedrec.core.data.split import UserData
from fedrec.core.models.base import Recommender, global_state, local_state
from fedrec.core.models.registry import ItemFeatureInput, build_model
from fedrec.core.privacy.accounting import Step
from fedrec.core.privacy.record_level import RecordDP, draw_negatives, record_losses
from fedrec.core.privacy.record_steps import sample_rate, steps_per_epoch, steps_per_round
from fedrec.core.privacy.secure_random import SecureRandom
from fedrec.core.training.cohort import _StackedOptimizer
from fedrec.core.training.implicit import TrainingConfig
from fedrec.core.training.local_round import LocalResult

# users trained together (memory: each carries a copy of the model and two Adam moments)
DEFAULT_CHUNK_USERS = 32


def _example_gradients(model: Recommender, params: Tensors, trainable: Sequence[str], owners: torch.Tensor,
                       items: torch.Tensor, loss: str, buffers: Tensors) -> tuple[Tensors, torch.Tensor]:
    """Per-example gradients of the ``trainable`` parameters (item tables as gathered rows)
    and the per-example losses, every example at its own user's parameters."""
    tables = set(model.item_table_names)

    def own(name: str, value: torch.Tensor) -> torch.Tensor:
        return value[owners[:, None], items] if name in tables else value[owners]

    moving = {n: own(n, params[n]) for n in trainable}
    fixed = {n: own(n, v) for n, v in params.items() if n not in moving}
    fixed.update({n: v[items] for n, v in buffers.items()})
    width = items.shape[1]

    def one(moving: Tensors, fixed: Tensors) -> torch.Tensor:
        positions = torch.arange(width, device=items.device)
        scores = functional_call(model, {**fixed, **moving}, (torch.zeros_like(positions), positions))
        return record_losses(scores[None, :], loss)[0]

    grads, losses = vmap(grad_and_value(one), in_dims=(0, 0))(moving, fixed)
    return grads, losses


def _joint_norms(model: Recommender, grads: Tensors, items: torch.Tensor) -> torch.Tensor:
    """``(E,)`` norm of each example's gradient over every trained parameter (repeated items summed)."""
    tables = set(model.item_table_names)
    squared = torch.zeros(len(items), dtype=torch.float64)
    same = (items[:, :, None] == items[:, None, :]).to(torch.float64)
    for name, value in grads.items():
        flat = value.reshape(value.shape[0], value.shape[1] if name in tables else 1, -1).to(torch.float64)
        if name in tables:
            squared += (torch.bmm(flat, flat.transpose(1, 2)) * same).sum(dim=(1, 2))
        else:
            squared += flat.pow(2).sum(dim=(1, 2))
    return squared.clamp(min=0).sqrt()


def train_users_private(
    model_name: str,
    dim: int,
    global_arrays: Arrays,
    local_arrays: Sequence[Arrays],
    users: Sequence[UserData],
    config: TrainingConfig,
    local_epochs: int,
    user_epochs: int,
    rngs: Sequence[SecureRandom],
    dp: RecordDP,
    item_features: ItemFeatureInput | None = None,
    chunk_users: int = DEFAULT_CHUNK_USERS,
) -> list[tuple[LocalResult, list[Step]]]:
    """Each user's record-level round, as :func:`~fedrec.core.privacy.record_level.train_user_private`
    returns it (the result and the ``(σ, q, steps)`` runs applied), in the order given.
    ``rngs[j]`` is user ``j``'s generator."""
    if not len(local_arrays) == len(users) == len(rngs):
        raise ValueError("one local part and one generator per user are required")
    if any(not isinstance(r, SecureRandom) for r in rngs):
        raise TypeError("record-level DP draws from a SecureRandom per user")
    out: list[tuple[LocalResult, list[Step]]] = []
    for start in range(0, len(users), chunk_users):
        out += _chunk(model_name, dim, global_arrays, local_arrays[start:start + chunk_users],
                      users[start:start + chunk_users], config, local_epochs, user_epochs,
                      rngs[start:start + chunk_users], dp, item_features)
    return out


def _chunk(model_name: str, dim: int, global_arrays: Arrays, local_arrays: Sequence[Arrays],
           users: Sequence[UserData], config: TrainingConfig, local_epochs: int, user_epochs: int,
           rngs: Sequence[SecureRandom], dp: RecordDP,
           item_features: ItemFeatureInput | None) -> list[tuple[LocalResult, list[Step]]]:
    n_items = users[0].n_items
    model = build_model(model_name, 1, n_items, dim, item_features=item_features)
    buffers = {n: b for n, b in model.named_buffers() if n in model.item_buffer_names}
    order = [n for n, _ in model.named_parameters()]  # the per-client phase 2's optimiser order
    local_names = list(local_state(model))
    global_names = list(global_state(model))
    count = len(users)
    params: Tensors = {}
    for name in order:
        if name in global_names:
            value = torch.from_numpy(np.asarray(global_arrays[name], dtype=np.float32))
            params[name] = value[None].repeat(count, *([1] * value.dim())).clone()
        else:
            params[name] = torch.from_numpy(np.stack([np.asarray(a[name], dtype=np.float32) for a in local_arrays]))
    records = [torch.from_numpy(np.asarray(u.train_items, dtype=np.int64).copy()) for u in users]
    q = sample_rate(dp.sample_rate)
    histories: list[list[Step]] = [[] for _ in users]
    loss_sums, seen = [0.0] * count, [0] * count
    phases = ((local_names, user_epochs), (order, local_epochs))
    for index, (trainable, epochs) in enumerate(phases):
        if epochs == 0:
            continue
        optimizer = _StackedOptimizer({n: params[n] for n in trainable}, config)
        steps = epochs * steps_per_epoch(q)
        for _ in range(steps):
            losses = _step(model, params, trainable, records, rngs, n_items, config, dp, q, optimizer, buffers)
            if index == 1:
                for j, per_record in enumerate(losses):
                    loss_sums[j] += float(per_record.sum())
                    seen[j] += len(per_record)
        for history in histories:
            history.append((float(dp.noise_multiplier), q, steps))
    expected = steps_per_round(dp.sample_rate, local_epochs, user_epochs)
    out = []
    for j in range(count):
        if sum(s for _, _, s in histories[j]) != expected:
            raise RuntimeError(f"user {users[j].user}: {histories[j]} is not the {expected} planned steps")
        update = {n: params[n][j].numpy().astype(np.float32) - np.asarray(global_arrays[n], dtype=np.float32)
                  for n in global_names}
        local = {n: params[n][j].numpy().astype(np.float32, copy=True) for n in local_names}
        loss = loss_sums[j] / seen[j] if seen[j] else 0.0
        out.append((LocalResult(update, local, seen[j] * (1 + config.negatives), loss), histories[j]))
    return out


def _step(model: Recommender, params: Tensors, trainable: Sequence[str], records: Sequence[torch.Tensor],
          rngs: Sequence[SecureRandom], n_items: int, config: TrainingConfig, dp: RecordDP, q: float,
          optimizer: _StackedOptimizer, buffers: Tensors) -> list[torch.Tensor]:
    """One DP-SGD step of every user; each user's per-record losses before it."""
    owners, items = [], []
    for j, (own_records, rng) in enumerate(zip(records, rngs)):  # per user: the mask, then the negatives
        mask = rng.bernoulli(q, len(own_records))
        positives = own_records[torch.from_numpy(np.asarray(mask, dtype=bool))]
        negatives = draw_negatives(positives, n_items, config.negatives, rng)
        owners.append(torch.full((len(positives),), j, dtype=torch.int64))
        items.append(torch.cat([positives[:, None], negatives], dim=1))
    return dp_update(model, params, trainable, torch.cat(owners), torch.cat(items), rngs, n_items, config.loss, dp,
                     optimizer, buffers)


def dp_update(model: Recommender, params: Tensors, trainable: Sequence[str], owner: torch.Tensor, item: torch.Tensor,
              rngs: Sequence[SecureRandom], n_items: int, loss: str, dp: RecordDP, optimizer: _StackedOptimizer,
              buffers: Tensors) -> list[torch.Tensor]:
    """The step of every user on the sampled examples ``(owner (E,), item (E, 1 + k))``:
    clipped per-example gradients summed per user, each user's noise, divided by ``b``,
    the optimiser's step; each user's per-record losses before it."""
    tables = set(model.item_table_names)
    summed = {n: torch.zeros_like(params[n], dtype=torch.float64) for n in trainable}
    losses = torch.zeros(0)
    if len(owner):
        grads, losses = _example_gradients(model, params, trainable, owner, item, loss, buffers)
        factor = torch.clamp(dp.clip / _joint_norms(model, grads, item).clamp(min=1e-300), max=1.0)
        for name, g in grads.items():
            clipped = g.to(torch.float64) * factor.view(-1, *([1] * (g.dim() - 1)))
            if name in tables:
                flat = summed[name].view(-1, *summed[name].shape[2:])
                flat.index_add_(0, (owner[:, None] * n_items + item).reshape(-1),
                                clipped.reshape(-1, *clipped.shape[2:]))
            else:
                summed[name].index_add_(0, owner, clipped)
    std = dp.noise_multiplier * dp.clip
    sizes = [params[n][0].numel() for n in trainable]
    noised: Tensors = {n: torch.empty_like(params[n]) for n in trainable}
    for j, rng in enumerate(rngs):  # per user: one draw over its trained coordinates, in optimiser order
        flat = rng.normal_tensor(sum(sizes), std) if std > 0 else None  # as the book-keeping step draws it
        offset = 0
        for name, size in zip(trainable, sizes):
            total = summed[name][j]
            if flat is not None:
                total = total + flat[offset:offset + size].view(total.shape)
            offset += size
            noised[name][j] = total.to(torch.float32) / float(dp.divisor)
    optimizer.step(noised, len(rngs))
    return [losses[owner == j].detach() for j in range(len(rngs))]

