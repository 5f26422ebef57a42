"""Content-based ranker (:mod:`fedrec.core.models.content`): scores, split, local profile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.core.models import build_model, local_state
from fedrec.core.models.content import ContentRanker, init_profile, profile_from_items
from fedrec.core.training.implicit import TrainingConfig, make_optimizer, reconstruct_local, train_epoch

FEATURES = np.asarray([[1, 0], [0, 1], [1, 1]], dtype=np.float32)


def hand_model() -> ContentRanker:
    """2 users, 3 items, d = 2, F = 2 with every parameter set by hand."""
    model = ContentRanker(2, 3, 2, FEATURES)
    with torch.no_grad():
        model.feature_projection.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))  # W f = [1,0],[2,1],[3,1]
        model.item_bias.weight.copy_(torch.tensor([[0.1], [0.2], [-0.3]]))
        model.user_embedding.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.0]]))
    return model


def test_hand_worked_scores() -> None:
    expected = torch.tensor([[1.1, 4.2, 4.7], [-0.9, -1.8, -3.3]])  # <p_u, W f_i> + b_i
    model = hand_model()
    with torch.no_grad():
        table = model.score_items(torch.tensor([0, 1]), torch.arange(3))
        pairs = model(torch.tensor([1, 0]), torch.tensor([0, 2]))
    torch.testing.assert_close(table, expected)
    torch.testing.assert_close(pairs, torch.tensor([-0.9, 4.7]))


def test_declared_split_has_no_item_vectors() -> None:
    model = build_model("content", 5, 3, 4, item_features=FEATURES)
    assert model.global_parameter_names == ("feature_projection.weight", "item_bias.weight")
    assert model.local_parameter_names == ("user_embedding.weight",)  # the profile p_u
    assert model.item_table_names == ("item_bias.weight",)
    assert "item_features" not in dict(model.named_parameters())
    assert "item_features" not in model.state_dict()
    assert local_state(model)["user_embedding.weight"].shape == (5, 4)


def test_profile_is_the_centroid_of_the_projected_features() -> None:
    model = hand_model()
    torch.testing.assert_close(profile_from_items(model, np.asarray([0, 2])), torch.tensor([2.0, 0.5]))
    init_profile(model, 1, np.asarray([1]))
    torch.testing.assert_close(model.user_embedding.weight[1], torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(model.user_embedding.weight[0], torch.tensor([1.0, 2.0]))  # others untouched


def test_profile_rejects_bad_input() -> None:
    model = hand_model()
    with pytest.raises(ValueError, match="none"):
        profile_from_items(model, np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match=r"0\.\.2"):
        profile_from_items(model, np.asarray([3]))
    with pytest.raises(ValueError, match="user 2"):
        init_profile(model, 2, np.asarray([0]))


def genre_world() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """24 users, 12 items of 3 genres (one-hot features, items g, g+3, g+6, g+9 are genre g).

    User u likes genre u mod 3 and has rated its first three items; item 9 + g of each
    genre is never rated by anyone.
    """
    features = np.zeros((12, 3), dtype=np.float32)
    features[np.arange(12), np.arange(12) % 3] = 1.0
    users, items = [], []
    for u in range(24):
        g = u % 3
        users += [u] * 3
        items += [g, g + 3, g + 6]
    return np.asarray(users), np.asarray(items), features


def test_the_locally_built_profile_ranks_unrated_items_of_the_users_genre_first() -> None:
    """Global W and b trained on users 0..20; a new user 21..23 builds its profile on
    its own device (centroid, then reconstruction with W and b frozen) and ranks the
    never-rated item of its genre first among the items it has not rated."""
    torch.set_num_threads(1)
    users, items, features = genre_world()
    trained = users < 21
    model = build_model("content", 24, 12, 4, seed=0, item_features=features)
    config = TrainingConfig(lr=0.05, batch_size=8, negatives=2)
    optimizer = make_optimizer(list(model.parameters()), config)
    rng = np.random.default_rng(0)
    for _ in range(20):
        train_epoch(model, optimizer, users[trained], items[trained], config, rng)
    for u in (21, 22, 23):
        client = build_model("content", 1, 12, 4, item_features=features)
        with torch.no_grad():
            client.feature_projection.weight.copy_(model.feature_projection.weight)
            client.item_bias.weight.copy_(model.item_bias.weight)
        own = items[users == u]
        init_profile(client, 0, own)
        centroid_scores = client.score_items(torch.zeros(1, dtype=torch.long), torch.arange(12))[0].detach()
        reconstruct_local(client, own, config, 5, np.random.default_rng(u))
        with torch.no_grad():
            scores = client.score_items(torch.zeros(1, dtype=torch.long), torch.arange(12))[0]
        unrated = np.setdiff1d(np.arange(12), own)
        for s in (centroid_scores, scores):
            assert int(unrated[int(torch.argmax(s[unrated]))]) == 9 + u % 3
