"""BPR-MF: the loss by hand, a planted two-block structure it must learn, and seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedrec.core.baselines.bpr import BPR, BPRConfig, bpr_loss
from fedrec.core.data.interactions import Interactions
from fedrec.core.data.split import LeaveOneOutSplit, leave_one_out
from fedrec.core.models.mf import MF

pytestmark = pytest.mark.usefixtures("one_thread")

BLOCK = 10  # users 0..59 like items 0..9, users 60..119 like items 10..19
N_USERS = 120


@pytest.fixture()
def two_blocks() -> LeaveOneOutSplit:
    """120 users, 20 items; each user interacts with 6 random items of its own block only.

    Leave-one-out keeps 4 of them for training, so the 6 other items of a user's block
    are unseen by that user but liked by the 59 others of its block.
    """
    rng = np.random.default_rng(5)
    users, items = [], []
    for u in range(N_USERS):
        block = 0 if u < N_USERS // 2 else BLOCK
        users += [u] * 6
        items += list(block + rng.choice(BLOCK, size=6, replace=False))
    return leave_one_out(Interactions.from_raw(users, items, timestamps=np.arange(len(users))), seed=0)


def test_loss_by_hand() -> None:
    model = MF(n_users=1, n_items=2, dim=2)
    with torch.no_grad():
        model.user_embedding.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.item_embedding.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        model.item_bias.weight.copy_(torch.tensor([[0.5], [0.0]]))
    # s(0, 0) = 1 + 0.5 = 1.5, s(0, 1) = 2 → margin −0.5;
    # penalty ‖p‖² + ‖q0‖² + ‖q1‖² + b0² + b1² = 5 + 1 + 1 + 0.25 + 0 = 7.25
    loss = bpr_loss(model, torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), reg=0.1)
    expected = -math.log(1 / (1 + math.exp(0.5))) + 0.1 * 7.25
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_learns_the_planted_blocks(two_blocks: LeaveOneOutSplit) -> None:
    model = BPR(BPRConfig(dim=4, epochs=30, lr=0.02, batch_size=64, reg=0.01, seed=0)).fit(two_blocks)
    scores = model.score_users(np.arange(N_USERS))
    correct = []
    for u in range(N_USERS):
        own = np.arange(BLOCK) + (0 if u < N_USERS // 2 else BLOCK)
        other = np.setdiff1d(np.arange(2 * BLOCK), own)
        unseen_own = np.setdiff1d(own, two_blocks.train_items_of(u))
        # share of (unseen own-block item, other-block item) pairs ordered correctly
        correct.append(np.mean(scores[u, unseen_own][:, None] > scores[u, other][None, :]))
    # chance is 0.5; measured 0.993 (worst user 0.9) for this seed
    assert np.mean(correct) > 0.95
    assert min(correct) > 0.75
    assert model.epoch_losses[-1] < 0.5 * model.epoch_losses[0]


def test_same_seed_same_scores_other_seed_other_scores(two_blocks: LeaveOneOutSplit) -> None:
    config = BPRConfig(dim=4, epochs=3, batch_size=16, seed=7)
    users = np.arange(N_USERS)
    first = BPR(config).fit(two_blocks).score_users(users)
    again = BPR(config).fit(two_blocks).score_users(users)
    other = BPR(BPRConfig(dim=4, epochs=3, batch_size=16, seed=8)).fit(two_blocks).score_users(users)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_sgd_also_learns(two_blocks: LeaveOneOutSplit) -> None:
    model = BPR(BPRConfig(dim=8, epochs=30, lr=0.5, batch_size=16, optimizer="sgd")).fit(two_blocks)
    assert model.epoch_losses[-1] < model.epoch_losses[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
        ({"dim": 0}, "must be ≥ 1"),
        ({"epochs": 0}, "must be ≥ 1"),
        ({"batch_size": 0}, "must be ≥ 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"reg": -1e-3}, "reg must be ≥ 0"),
    ],
)
def test_bad_config_is_refused(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BPRConfig(**options)
