"""Next-item training of a sequence recommender, one user at a time (federated) or all at once (central).

**The history.** A user's training history is their training items in time order:
:func:`~fedrec.core.data.split.leave_one_out` sorts each user's interactions by
(timestamp, input position) and keeps that order in its CSR arrays, so
``split.train_items_of(u)`` (and ``UserData.train_items``) already *is* the ordered
history (:func:`ordered_history`; a test pins this against a rebuild from the
interactions). The validation item follows the training items and the test item
follows the validation item, so the test item is scored from ``train + [validation]``
and evaluated with :func:`~fedrec.core.evaluation.protocols.evaluate_user` (sampled and full
protocols), like every other model.

**The examples.** A history ``h_1..h_n`` gives ``n − 1`` next-item targets: the prefix
``h_1..h_l`` predicts ``h_{l+1}``. They are cut, from the most recent backwards, into
windows of at most ``max_len`` inputs (:func:`next_item_windows`); the causal encoder
produces every prefix's state in one pass over a window. Losses, with ``H_l`` the
state after ``h_l``, ``s(i) = <H_l, E[i + 1]>`` (item ``i``'s row of the item table),
``σ`` the logistic function, averaged over the targets of a batch:

* ``bce`` (SASRec): ``-log σ(s(h_{l+1})) - Σ_j log(1 − σ(s(j)))`` over ``negatives``
  items ``j`` drawn uniformly from the items the user has **not** trained on, divided by
  ``1 + negatives`` (the per-example mean of :mod:`fedrec.core.training.implicit`);
* ``bpr``: ``-log σ(s(h_{l+1}) − s(j))`` averaged over the sampled ``j``;
* ``softmax``: full cross-entropy ``-log softmax(s)_{h_{l+1}}`` over the catalogue.

With ``bce``/``bpr`` a user's update of the item table touches only the rows of their
history items and sampled negatives; ``softmax`` moves every row.

**The round.** :func:`train_sequence_user` is one user's local round with the same
contract as :func:`fedrec.core.training.local_round.train_user`: from the global arrays ``x``,
train ``local_epochs`` epochs on the user's own history and return
``Δ = x' − x`` (every parameter of the model is global) in a
:class:`~fedrec.core.training.local_round.LocalResult` whose ``local`` part is empty — the
user's private state is the history itself, which never leaves the device. The update
is not private by itself: with ``bce``/``bpr`` its non-zero item rows are the
user's history items and sampled negatives (the DP mechanisms apply as for the other
models).
Federated training is the round driver's (:func:`fedrec.core.federation.driver.run_federation`
with ``model="sasrec"``: the sequence family, :mod:`fedrec.core.families.sequence`, runs
:func:`sequence_user_round` for each sampled user of :func:`trainable_users`);
:func:`train_sequence_central` trains the same model on every user's windows at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional as F

from fedrec.core.arrays import Arrays, to_numpy
from fedrec.core.data.split import NO_ITEM, LeaveOneOutSplit, UserData
from fedrec.core.evaluation.protocols import evaluate_user, mean_metrics
from fedrec.core.models.sequence import (
    PAD_TOKEN,
    SASRec,
    SASRecConfig,
    SequenceRecommender,
    history_tokens,
    load_sequence_global,
    sequence_global_state,
)
from fedrec.core.training.implicit import positives_key, sample_negatives
from fedrec.core.training.local_round import LocalResult
from fedrec.core.training.optimizers import build_optimizer, check_optimizer

SEQUENCE_LOSSES = ("bce", "bpr", "softmax")
EVAL_BATCH_USERS = 256
RoundCallback = Callable[[dict[str, float]], None]


@dataclass(frozen=True)
class SequenceTrainingConfig:
    """Hyper-parameters of next-item training, validated once at the edge.

    Attributes:
        lr: client (or central) learning rate; ``0`` is allowed and leaves the model as is.
        batch_size: windows (each up to ``max_len`` targets) per optimiser step.
        negatives: sampled negatives per target (``bce``, ``bpr``; unused by ``softmax``).
        loss: one of :data:`SEQUENCE_LOSSES` (see the module docstring).
        optimizer: ``adam`` or ``sgd``, fresh at every local round.
        weight_decay: L2 coefficient of the optimiser.
    """

    lr: float = 0.001
    batch_size: int = 32
    negatives: int = 1
    loss: str = "bce"
    optimizer: str = "adam"
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.loss not in SEQUENCE_LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}: choose one of {SEQUENCE_LOSSES}")
        check_optimizer(self.optimizer)
        if not self.lr >= 0:
            raise ValueError(f"lr must be ≥ 0, got {self.lr}")
        if self.batch_size < 1 or self.negatives < 1:
            raise ValueError(f"batch_size and negatives must be ≥ 1, got {self.batch_size}, {self.negatives}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be ≥ 0, got {self.weight_decay}")


def ordered_history(split: LeaveOneOutSplit, user: int) -> NDArray[np.int64]:
    """User ``user``'s training items in time order (oldest first); see the module docstring."""
    if not 0 <= user < split.n_users:
        raise ValueError(f"user {user} outside 0..{split.n_users - 1}")
    return split.train_items_of(user)


def evaluation_history(user: UserData) -> NDArray[np.int64]:
    """The history the test item is scored from: training items, then the validation item if any."""
    if user.validation_item == NO_ITEM:
        return user.train_items
    return np.append(user.train_items, user.validation_item)


def next_item_windows(
    history: NDArray[np.int64], n_items: int, max_len: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Left-padded ``(inputs, targets)`` token windows ``(w, max_len)`` of a history in time order.

    The ``n − 1`` pairs ``(h_l → h_{l+1})`` are cut from the most recent backwards into
    ``w = ⌈(n − 1) / max_len⌉`` windows; ``targets[r, c]`` is the token that follows
    ``inputs[r, c]`` and both are :data:`PAD_TOKEN` on padding.
    """
    items = _check_history(history, n_items, minimum=2)
    if max_len < 1:
        raise ValueError(f"max_len must be ≥ 1, got {max_len}")
    tokens = items + 1
    pairs = len(tokens) - 1
    ends = list(range(pairs, 0, -max_len))
    inputs = np.full((len(ends), max_len), PAD_TOKEN, dtype=np.int64)
    targets = np.full((len(ends), max_len), PAD_TOKEN, dtype=np.int64)
    for r, end in enumerate(ends):
        start = max(0, end - max_len)
        inputs[r, max_len - (end - start) :] = tokens[start:end]
        targets[r, max_len - (end - start) :] = tokens[start + 1 : end + 1]
    return inputs, targets


def sequence_loss(
    model: SASRec, inputs: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor, loss: str
) -> torch.Tensor:
    """Mean next-item loss of a batch: ``inputs, targets (b, L)`` and ``negatives (b, L, k)`` tokens."""
    hidden = model.encode(inputs)
    valid = targets != PAD_TOKEN
    if loss == "softmax":
        return F.cross_entropy(model.item_logits(hidden[valid]), targets[valid] - 1)
    candidates = torch.cat([targets[..., None], negatives], dim=-1)
    logits = model.token_logits(hidden, candidates)[valid]  # (targets, 1 + k)
    if loss == "bce":
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels)
    if loss == "bpr":
        return -F.logsigmoid(logits[:, :1] - logits[:, 1:]).mean()
    raise ValueError(f"unknown loss {loss!r}: choose one of {SEQUENCE_LOSSES}")


def train_sequence_epoch(
    model: SASRec,
    optimizer: torch.optim.Optimizer,
    inputs: NDArray[np.int64],
    targets: NDArray[np.int64],
    window_users: NDArray[np.int64],
    key: NDArray[np.int64],
    config: SequenceTrainingConfig,
    rng: np.random.Generator,
) -> tuple[float, int]:
    """One pass over the windows with fresh negatives; returns ``(mean loss per target, targets)``.

    ``window_users (w,)`` names the user of each window and ``key`` is
    :func:`~fedrec.core.training.implicit.positives_key` of the training positives, so that a
    negative is never an item its user trained on. Draws from ``rng`` in a fixed order
    (negatives, then the permutation of windows).
    """
    if len(inputs) == 0 or inputs.shape != targets.shape or len(window_users) != len(inputs):
        raise ValueError(
            f"expected w ≥ 1 windows with inputs, targets (w, L) and window_users (w,), got shapes "
            f"{inputs.shape}, {targets.shape}, {window_users.shape}"
        )
    valid = targets != PAD_TOKEN
    negatives = np.zeros(targets.shape + (config.negatives,), dtype=np.int64)
    if config.loss != "softmax":
        users_of_targets = np.broadcast_to(window_users[:, None], targets.shape)[valid]
        negatives[valid] = sample_negatives(users_of_targets, key, model.n_items, config.negatives, rng) + 1
    order = rng.permutation(len(inputs))
    inputs_t = torch.from_numpy(inputs[order])
    targets_t = torch.from_numpy(targets[order])
    negatives_t = torch.from_numpy(negatives[order])
    counts = valid[order].sum(axis=1)
    total, seen = 0.0, 0
    model.train()
    for start in range(0, len(order), config.batch_size):
        batch = slice(start, start + config.batch_size)
        optimizer.zero_grad(set_to_none=True)
        loss = sequence_loss(model, inputs_t[batch], targets_t[batch], negatives_t[batch], config.loss)
        loss.backward()
        optimizer.step()
        n = int(counts[batch].sum())
        total += loss.item() * n
        seen += n
    return total / seen, seen


def train_sequence_user(
    global_arrays: Arrays,
    history: NDArray[np.int64],
    n_items: int,
    model_config: SASRecConfig,
    config: SequenceTrainingConfig,
    local_epochs: int,
    rng: np.random.Generator,
) -> LocalResult:
    """One user's local round: ``Δ = x' − x`` after ``local_epochs`` epochs on their own history.

    ``history`` holds the user's training items in time order (at least 2, to form one
    target). ``rng`` drives the negatives, the window order and (through a torch seed
    drawn from it first) dropout, so the same generator state gives the same update.
    ``num_examples`` counts next-item targets trained on (``(n − 1) · local_epochs``),
    the FedAvg weight; ``local`` is empty (see the module docstring).
    """
    if local_epochs < 0:
        raise ValueError(f"local_epochs must be ≥ 0, got {local_epochs}")
    items = _check_history(history, n_items, minimum=2)
    model = model_config.build(n_items)
    load_sequence_global(model, {k: torch.from_numpy(v) for k, v in global_arrays.items()})
    torch_seed = int(rng.integers(0, 2**63 - 1))
    inputs, targets = next_item_windows(items, n_items, model_config.max_len)
    window_users = np.zeros(len(inputs), dtype=np.int64)
    key = positives_key(np.zeros(len(items), dtype=np.int64), items, n_items)
    optimizer = _make_optimizer(model, config)
    losses, examples = [], 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        for _ in range(local_epochs):
            loss, n = train_sequence_epoch(model, optimizer, inputs, targets, window_users, key, config, rng)
            losses.append(loss)
            examples += n
    new_global = to_numpy(sequence_global_state(model))
    update = {k: new_global[k] - global_arrays[k] for k in global_arrays}
    return LocalResult(update, {}, examples, float(np.mean(losses)) if losses else 0.0)


def sequence_user_round(
    global_arrays: Arrays,
    user: UserData,
    model_config: SASRecConfig,
    training: SequenceTrainingConfig,
    local_epochs: int,
    seed: int,
    server_round: int,
) -> LocalResult:
    """A user's round as a client runs it: :func:`train_sequence_user` on ``user.train_items``
    (already in time order) with a generator seeded by ``(seed, user, server_round)``."""
    rng = np.random.default_rng([seed, user.user, server_round])
    return train_sequence_user(global_arrays, user.train_items, user.n_items, model_config, training,
                               local_epochs, rng)


def sequence_user_metrics(
    global_arrays: Arrays, user: UserData, model_config: SASRecConfig, k: int
) -> dict[str, float]:
    """A user's evaluation as a client runs it: :func:`sequence_user_scores` fed to ``evaluate_user``."""
    model = model_config.build(user.n_items)
    load_sequence_global(model, {key: torch.from_numpy(v) for key, v in global_arrays.items()})
    return evaluate_user(sequence_user_scores(model, user), user, k)


@torch.no_grad()
def sequence_user_scores(model: SequenceRecommender, user: UserData) -> NDArray[np.float32]:
    """``(n_items,)`` next-item logits from the user's :func:`evaluation_history`."""
    model.eval()
    tokens = history_tokens([evaluation_history(user)], model.n_items, model.max_len)
    return model.score_items_for_history(tokens)[0].numpy()


@torch.no_grad()
def evaluate_sequence_model(
    model: SequenceRecommender, split: LeaveOneOutSplit, k: int, users: NDArray[np.int64] | None = None
) -> dict[str, float]:
    """Mean :func:`~fedrec.core.evaluation.protocols.evaluate_user` metrics of the test item over ``users``.

    ``users`` defaults to every evaluated user; each is scored from training items +
    validation item, in batches of :data:`EVAL_BATCH_USERS`.
    """
    if model.n_items != split.n_items:
        raise ValueError(f"the model has {model.n_items} items, the split {split.n_items}")
    users = split.evaluated_users() if users is None else np.asarray(users, dtype=np.int64)
    model.eval()
    rows = []
    for start in range(0, len(users), EVAL_BATCH_USERS):
        data = [split.user_data(int(u)) for u in users[start : start + EVAL_BATCH_USERS]]
        tokens = history_tokens([evaluation_history(d) for d in data], split.n_items, model.max_len)
        scores = model.score_items_for_history(tokens).numpy()
        rows += [evaluate_user(scores[j], d, k) for j, d in enumerate(data)]
    return mean_metrics(rows)


def trainable_users(split: LeaveOneOutSplit) -> NDArray[np.int64]:
    """Users with at least 2 training items (one next-item target)."""
    return np.flatnonzero(np.diff(split.train_indptr) >= 2).astype(np.int64)


def train_sequence_central(
    split: LeaveOneOutSplit,
    model_config: SASRecConfig,
    training: SequenceTrainingConfig,
    epochs: int,
    seed: int = 0,
    eval_every: int = 5,
    k: int = 10,
    on_epoch: RoundCallback | None = None,
) -> tuple[SASRec, list[dict[str, float]]]:
    """The central twin: every user's windows shuffled together, ``epochs`` passes.

    Same model, windows, loss and evaluation as the federated run. Returns the model and
    one row per epoch (``epoch``, ``train_loss``, ``wall_seconds`` and the metrics of
    :func:`evaluate_sequence_model` every ``eval_every`` epochs and at the last).
    """
    if epochs < 1 or eval_every < 1:
        raise ValueError(f"epochs and eval_every must be ≥ 1, got {epochs}, {eval_every}")
    users = trainable_users(split)
    if len(users) == 0:
        raise ValueError("no user has 2 or more training items: nothing to train on")
    model = model_config.build(split.n_items, seed=seed)
    windows = [next_item_windows(split.train_items_of(int(u)), split.n_items, model_config.max_len) for u in users]
    inputs = np.concatenate([w[0] for w in windows])
    targets = np.concatenate([w[1] for w in windows])
    window_users = np.repeat(users, [len(w[0]) for w in windows])
    key = positives_key(split.train_users(), split.train_items, split.n_items)
    optimizer = _make_optimizer(model, training)
    rng = np.random.default_rng([seed, 1])
    history = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            loss, _ = train_sequence_epoch(model, optimizer, inputs, targets, window_users, key, training, rng)
            row: dict[str, float] = {"epoch": epoch, "train_loss": loss}
            if epoch % eval_every == 0 or epoch == epochs:
                row.update(evaluate_sequence_model(model, split, k))
            row["wall_seconds"] = time.perf_counter() - started
            history.append(row)
            if on_epoch is not None:
                on_epoch(row)
    return model, history


def _check_history(history: NDArray[np.int64], n_items: int, minimum: int) -> NDArray[np.int64]:
    items = np.asarray(history)
    if items.ndim != 1:
        raise ValueError(f"a history is a 1-D array of item ids, got shape {items.shape}")
    if len(items) < minimum:
        raise ValueError(
            f"a history of {len(items)} item(s) is too short: next-item training needs at least {minimum}"
        )
    if not np.issubdtype(items.dtype, np.integer):
        raise ValueError(f"a history holds integer item ids, got {items.dtype}")
    if items.min() < 0 or items.max() >= n_items:
        raise ValueError(f"a history has an item id outside 0..{n_items - 1}")
    return items.astype(np.int64)


def _make_optimizer(model: torch.nn.Module, config: SequenceTrainingConfig) -> torch.optim.Optimizer:
    return build_optimizer(config.optimizer, model.parameters(), config.lr, config.weight_decay)


