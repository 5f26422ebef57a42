"""Hybrid MF (:mod:`fedrec.core.models.hybrid`): hand-worked scores, the split, cold items."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.core.data.item_features import ItemFeatures
from fedrec.core.models import build_model, global_state, local_state
from fedrec.core.models.hybrid import Hybrid
from fedrec.core.training.implicit import TrainingConfig, make_optimizer, train_epoch

FEATURES = np.asarray([[1, 0], [0, 1], [1, 1]], dtype=np.float32)


def hand_model() -> Hybrid:
    """2 users, 3 items, d = 2, F = 2 with every parameter set by hand."""
    model = Hybrid(2, 3, 2, FEATURES)
    with torch.no_grad():
        model.feature_projection.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))  # W f = [1,0],[2,1],[3,1]
        model.item_embedding.weight.copy_(torch.tensor([[0.5, 0.0], [0.0, 0.0], [1.0, -1.0]]))
        model.item_bias.weight.copy_(torch.tensor([[0.1], [0.2], [-0.3]]))
        model.user_embedding.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.0]]))
    return model


def test_hand_worked_scores() -> None:
    # q + W f = [1.5, 0], [2, 1], [4, 0]; s = <p, q + W f> + b
    expected = torch.tensor([[1.6, 4.2, 3.7], [-1.4, -1.8, -4.3]])
    model = hand_model()
    with torch.no_grad():
        table = model.score_items(torch.tensor([0, 1]), torch.arange(3))
        pairs = model(torch.tensor([0, 1, 1]), torch.tensor([1, 0, 2]))
    torch.testing.assert_close(table, expected)
    torch.testing.assert_close(pairs, torch.tensor([4.2, -1.4, -4.3]))


def test_declared_split() -> None:
    model = build_model("hybrid", 5, 3, 4, item_features=FEATURES)
    assert model.global_parameter_names == ("item_embedding.weight", "feature_projection.weight", "item_bias.weight")
    assert model.local_parameter_names == ("user_embedding.weight",)
    assert set(model.item_table_names) == {"item_embedding.weight", "item_bias.weight"}
    assert local_state(model)["user_embedding.weight"].shape == (5, 4)
    assert global_state(model)["feature_projection.weight"].shape == (4, 2)


def test_features_are_a_fixed_buffer_not_a_parameter() -> None:
    model = build_model("hybrid", 5, 3, 4, item_features=FEATURES)
    assert "item_features" not in dict(model.named_parameters())
    assert "item_features" not in model.state_dict()  # never shipped nor checkpointed
    torch.testing.assert_close(model.item_features, torch.from_numpy(FEATURES))
    assert not model.item_features.requires_grad
    # the model holds its own copy: changing the caller's array changes nothing
    features = FEATURES.copy()
    other = build_model("hybrid", 5, 3, 4, item_features=features)
    features[:] = 9.0
    torch.testing.assert_close(other.item_features, torch.from_numpy(FEATURES))


def test_item_features_object_and_array_build_the_same_model() -> None:
    a = build_model("hybrid", 5, 3, 4, seed=2, item_features=FEATURES)
    b = build_model("hybrid", 5, 3, 4, seed=2, item_features=ItemFeatures(FEATURES, ("x", "y")))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert torch.equal(a.item_features, b.item_features)


def test_a_new_item_is_scored_by_its_features_alone() -> None:
    """At construction q_i = 0 and b_i = 0: s(u, i) = <p_u, W f_i> exactly."""
    model = build_model("hybrid", 4, 3, 6, seed=1, item_features=FEATURES)
    with torch.no_grad():
        scores = model.score_items(torch.arange(4), torch.arange(3))
        w, p = model.feature_projection.weight, model.user_embedding.weight
        expected = p @ (torch.from_numpy(FEATURES) @ w.T).T
    torch.testing.assert_close(scores, expected)
    assert not torch.equal(scores[:, 0], scores[:, 1])  # different features, different scores


def two_taste_groups() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """20 users, 8 items: group A (users 0-9) likes items 0-3, group B likes 4-7.

    Feature 0 marks A's kind of item, feature 1 B's kind; features of two more items,
    8 (A's kind) and 9 (B's kind), are returned too (rows 8 and 9).
    """
    features = np.zeros((10, 2), dtype=np.float32)
    features[[0, 1, 2, 3, 8], 0] = 1.0
    features[[4, 5, 6, 7, 9], 1] = 1.0
    users, items = [], []
    for u in range(20):
        liked = (0, 1, 2, 3) if u < 10 else (4, 5, 6, 7)
        users += [u] * 4
        items += liked
    return np.asarray(users), np.asarray(items), features


def trained_then_extended(seed: int) -> Hybrid:
    """Train on items 0-7, then add items 8 and 9 to the catalogue with no interactions.

    The new items enter as the server would add them: their item-table rows are zero
    (``q_i = 0, b_i = 0``), only their features are known.
    """
    torch.set_num_threads(1)
    users, items, features = two_taste_groups()
    model = build_model("hybrid", 20, 8, 4, seed=seed, item_features=features[:8])
    config = TrainingConfig(lr=0.05, batch_size=16, negatives=2)
    optimizer = make_optimizer(list(model.parameters()), config)
    rng = np.random.default_rng(seed)
    for _ in range(30):
        train_epoch(model, optimizer, users, items, config, rng)
    extended = build_model("hybrid", 20, 10, 4, item_features=features)
    with torch.no_grad():
        for name, value in model.named_parameters():
            target = dict(extended.named_parameters())[name]
            target.zero_()
            target[: value.shape[0]] = value
    return extended


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_cold_item_is_ranked_by_its_features(seed: int) -> None:
    """Every user ranks the new item of its own kind above the other new item, and above
    the items the other group likes."""
    model = trained_then_extended(seed)
    with torch.no_grad():
        scores = model.score_items(torch.arange(20), torch.arange(10))
    group_a = torch.arange(20) < 10
    assert bool((scores[group_a, 8] > scores[group_a, 9]).all())
    assert bool((scores[~group_a, 9] > scores[~group_a, 8]).all())
    assert bool((scores[group_a, 8] > scores[group_a, 4:8].max(dim=1).values).all())
    assert bool((scores[~group_a, 9] > scores[~group_a, 0:4].max(dim=1).values).all())


def test_features_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(ValueError, match=r"n_items=4"):
        build_model("hybrid", 2, 4, 3, item_features=FEATURES)
    with pytest.raises(ValueError, match="NaN"):
        build_model("hybrid", 2, 3, 3, item_features=np.full((3, 2), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="F ≥ 1"):
        build_model("hybrid", 2, 3, 3, item_features=np.zeros((3, 0), dtype=np.float32))
