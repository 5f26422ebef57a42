"""The three registries behind :func:`fedrec.core.models.registry.build_model`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrec.core.models.registry import (
    FEATURE_MODELS,
    MODELS,
    RATING_MODELS,
    build_model,
    model_class,
    needs_item_features,
)

FEATURES = np.random.default_rng(0).random((7, 3)).astype(np.float32)


def test_registries_are_disjoint_and_the_implicit_one_is_unchanged() -> None:
    assert sorted(MODELS) == ["gmf", "mf", "mlp", "neumf"]  # every pipeline runs these as they are
    assert sorted(FEATURE_MODELS) == ["content", "hybrid"]
    assert sorted(RATING_MODELS) == ["explicit-mf"]
    assert not (set(MODELS) & set(FEATURE_MODELS) or set(MODELS) & set(RATING_MODELS)
                or set(FEATURE_MODELS) & set(RATING_MODELS))


def test_which_models_need_item_features() -> None:
    assert {name for name in [*MODELS, *FEATURE_MODELS, *RATING_MODELS] if needs_item_features(name)} == set(
        FEATURE_MODELS
    )
    assert model_class("hybrid") is FEATURE_MODELS["hybrid"]


@pytest.mark.parametrize("name", sorted(FEATURE_MODELS))
def test_a_feature_model_without_features_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=rf"model '{name}' needs item features"):
        build_model(name, 3, 7, 4)


@pytest.mark.parametrize("name", sorted([*MODELS, *RATING_MODELS]))
def test_other_models_ignore_features(name: str) -> None:
    plain = build_model(name, 3, 7, 4, seed=2)
    given = build_model(name, 3, 7, 4, seed=2, item_features=FEATURES)
    assert not hasattr(given, "item_features")
    for (k, a), (_, b) in zip(plain.named_parameters(), given.named_parameters()):
        assert torch.equal(a, b), k


def test_unknown_name_lists_every_registry() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'.*content.*explicit-mf.*hybrid.*mf"):
        build_model("nope", 3, 7, 4)


def test_pinned_mf_parameters_are_unchanged() -> None:
    """``build_model`` of an existing model draws what it drew before the new registries."""
    model = build_model("mf", 2, 3, 2, seed=0)
    torch.testing.assert_close(
        model.user_embedding.weight.detach(), torch.tensor([[0.11006042, -0.10711873], [0.01227012, -0.05663175]])
    )
