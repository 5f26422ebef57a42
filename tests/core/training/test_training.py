"""Tests for :mod:`fedrec.core.training.implicit`: negatives, losses by hand, config, epochs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedrec.core.models import Recommender, build_model
from fedrec.core.training.implicit import (
    TrainingConfig,
    batch_loss,
    make_optimizer,
    positives_key,
    reconstruct_local,
    sample_negatives,
    score_all_items,
    train_epoch,
)

LN3 = math.log(3.0)


class TableModel(Recommender):
    """A recommender whose logit for (u, i) is an entry of a trainable table."""

    global_parameter_names = ("table",)
    local_parameter_names = ()

    def __init__(self, table: list[list[float]]) -> None:
        values = torch.tensor(table, dtype=torch.float32)
        super().__init__(values.shape[0], values.shape[1], 1)
        self.table = nn.Parameter(values)
        self.check_split()

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.table[users, items]


# user 0: item 0 → ln 3 (σ = 3/4), item 1 → −ln 3 (σ = 1/4), item 2 → 0 (σ = 1/2)
# user 1: item 0 → 0,              item 1 → ln 3,             item 2 → −ln 3
TABLE = [[LN3, -LN3, 0.0], [0.0, LN3, -LN3]]


# --- negative sampling -------------------------------------------------------------


def test_sample_negatives_never_returns_a_training_positive() -> None:
    n_items = 10
    positives = {0: set(range(8)), 1: {1, 3}, 2: {9}}  # user 0 can only get 8 or 9
    users = np.array([u for u, items in positives.items() for _ in items], dtype=np.int64)
    items = np.array([i for items in positives.values() for i in sorted(items)], dtype=np.int64)
    key = positives_key(users, items, n_items)
    drawn = {u: [] for u in positives}
    for seed in range(50):
        negatives = sample_negatives(users, key, n_items, 6, np.random.default_rng(seed))
        assert negatives.shape == (len(users), 6)
        assert ((negatives >= 0) & (negatives < n_items)).all()
        for u, row in zip(users, negatives):
            drawn[int(u)] += row.tolist()
    for u, items_of_u in positives.items():
        assert not set(drawn[u]) & items_of_u, u
    # not degenerate: every allowed item of user 0 and user 1 shows up
    assert set(drawn[0]) == {8, 9}
    assert set(drawn[1]) == set(range(10)) - {1, 3}


def test_sample_negatives_is_seeded() -> None:
    users = np.array([0, 0, 1], dtype=np.int64)
    key = positives_key(users, np.array([2, 5, 0]), 20)
    a = sample_negatives(users, key, 20, 4, np.random.default_rng(1))
    b = sample_negatives(users, key, 20, 4, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)


def test_sample_negatives_gives_up_on_a_user_with_every_item() -> None:
    users = np.zeros(5, dtype=np.int64)
    key = positives_key(users, np.arange(5), 5)
    with pytest.raises(ValueError, match="could not sample negatives"):
        sample_negatives(users, key, 5, 2, np.random.default_rng(0))


def test_positives_key() -> None:
    key = positives_key(np.array([1, 0, 1, 1]), np.array([2, 3, 0, 2]), 4)
    # 1·4+2 = 6, 0·4+3 = 3, 1·4+0 = 4, 6 again → sorted unique [3, 4, 6]
    np.testing.assert_array_equal(key, [3, 4, 6])


# --- losses by hand ----------------------------------------------------------------


def test_bce_loss_by_hand() -> None:
    model = TableModel(TABLE)
    loss = batch_loss(model, torch.tensor([0]), torch.tensor([0]), torch.tensor([[1, 2]]), "bce")
    # −log σ(ln 3) = −log(3/4) = 0.287682       (positive, label 1)
    # −log(1 − σ(−ln 3)) = −log(3/4) = 0.287682  (negative, label 0)
    # −log(1 − σ(0)) = log 2 = 0.693147          (negative, label 0)
    # mean over the 1 + 2 examples = 1.268511 / 3 = 0.422837
    assert loss.item() == pytest.approx(0.4228371084878357, abs=1e-6)


def test_bpr_loss_by_hand() -> None:
    model = TableModel(TABLE)
    loss = batch_loss(model, torch.tensor([0]), torch.tensor([0]), torch.tensor([[1, 2]]), "bpr")
    # pair (0, 1): −log σ(ln 3 − (−ln 3)) = −log σ(ln 9) = −log(9/10) = 0.105361
    # pair (0, 2): −log σ(ln 3 − 0)       = −log(3/4)                = 0.287682
    # mean over the 2 pairs = 0.196521
    assert loss.item() == pytest.approx(0.1965212940548036, abs=1e-6)


def test_losses_average_over_the_batch() -> None:
    model = TableModel(TABLE)
    users, positives, negatives = torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([[1, 2], [0, 2]])
    # user 1 mirrors user 0 (positive ln 3, negatives 0 and −ln 3), so the batch
    # means equal the one-row numbers above
    assert batch_loss(model, users, positives, negatives, "bce").item() == pytest.approx(0.4228371, abs=1e-6)
    assert batch_loss(model, users, positives, negatives, "bpr").item() == pytest.approx(0.1965213, abs=1e-6)
    # user 1 with positive 0 (logit 0) and negative 2 (−ln 3):
    # BCE = (log 2 + log(4/3)) / 2 = (0.693147 + 0.287682) / 2 = 0.490415
    # BPR = −log σ(0 − (−ln 3)) = log(4/3) = 0.287682
    one = (torch.tensor([1]), torch.tensor([0]), torch.tensor([[2]]))
    assert batch_loss(model, *one, "bce").item() == pytest.approx(0.4904146, abs=1e-6)
    assert batch_loss(model, *one, "bpr").item() == pytest.approx(0.2876821, abs=1e-6)


def test_loss_gradient_pushes_positive_up_and_negatives_down() -> None:
    model = TableModel(TABLE)
    batch_loss(model, torch.tensor([0]), torch.tensor([0]), torch.tensor([[1, 2]]), "bce").backward()
    grad = model.table.grad
    # d/ds of the mean BCE: (σ(s) − label) / 3 → (3/4 − 1)/3, (1/4)/3, (1/2)/3
    torch.testing.assert_close(grad[0], torch.tensor([-1 / 12, 1 / 12, 1 / 6]))
    assert (grad[1] == 0).all()


# --- one epoch ---------------------------------------------------------------------


def test_train_epoch_reports_the_example_weighted_mean_loss() -> None:
    users = np.array([0, 0, 1, 1, 1, 0, 1], dtype=np.int64)
    items = np.array([0, 1, 2, 3, 4, 5, 6], dtype=np.int64)
    model = build_model("mf", 2, 12, 4, seed=0)
    # a tiny SGD step leaves the parameters (almost) untouched, so every batch loss is
    # computed with the initial model
    config = TrainingConfig(lr=1e-12, batch_size=3, negatives=2, optimizer="sgd")
    key = positives_key(users, items, 12)
    replay = np.random.default_rng(4)
    negatives = sample_negatives(users, key, 12, 2, replay)
    with torch.no_grad():
        expected = batch_loss(
            model, torch.from_numpy(users), torch.from_numpy(items), torch.from_numpy(negatives), "bce"
        ).item()
    optimizer = make_optimizer(list(model.parameters()), config)
    loss, examples = train_epoch(model, optimizer, users, items, config, np.random.default_rng(4))
    # batches of 3, 3 and 1 positives weighted by size give the mean over all 7
    assert loss == pytest.approx(expected, rel=1e-5)
    assert examples == 7 * (1 + 2)


def test_train_epoch_on_no_data() -> None:
    model = build_model("mf", 1, 5, 2)
    config = TrainingConfig()
    optimizer = make_optimizer(list(model.parameters()), config)
    empty = np.array([], dtype=np.int64)
    assert train_epoch(model, optimizer, empty, empty, config, np.random.default_rng(0)) == (0.0, 0)


def test_reconstruct_local_only_moves_the_user_vector() -> None:
    model = build_model("mf", 1, 20, 4, seed=0)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    config = TrainingConfig(lr=0.05)
    reconstruct_local(model, np.array([1, 4, 7]), config, epochs=3, rng=np.random.default_rng(0))
    after = dict(model.named_parameters())
    assert torch.equal(after["item_embedding.weight"], before["item_embedding.weight"])
    assert torch.equal(after["item_bias.weight"], before["item_bias.weight"])
    assert not torch.equal(after["user_embedding.weight"], before["user_embedding.weight"])
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again


def test_reconstruct_local_needs_a_one_user_model() -> None:
    model = build_model("mf", 2, 20, 4)
    with pytest.raises(ValueError, match="one-user"):
        reconstruct_local(model, np.array([1]), TrainingConfig(), 1, np.random.default_rng(0))


def test_score_all_items() -> None:
    model = TableModel(TABLE)
    scores = score_all_items(model, np.array([1, 0, 1]))
    assert scores.shape == (3, 3)
    np.testing.assert_allclose(scores, np.array(TABLE, dtype=np.float32)[[1, 0, 1]])


# --- configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(loss="mse"), "unknown loss 'mse'"),
        (dict(optimizer="adagrad"), "unknown optimizer 'adagrad'"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(lr=-0.1), "lr must be > 0"),
        (dict(lr=float("nan")), "lr must be > 0"),
        (dict(batch_size=0), "batch_size"),
        (dict(negatives=0), "negatives"),
        (dict(weight_decay=-1e-4), "weight_decay"),
    ],
)
def test_training_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**kwargs)


@pytest.mark.parametrize(("name", "kind"), [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
def test_make_optimizer(name: str, kind: type) -> None:
    model = build_model("mf", 1, 3, 2)
    optimizer = make_optimizer(list(model.parameters()), TrainingConfig(lr=0.3, optimizer=name, weight_decay=0.1))
    assert isinstance(optimizer, kind)
    assert optimizer.param_groups[0]["lr"] == 0.3
    assert optimizer.param_groups[0]["weight_decay"] == 0.1
