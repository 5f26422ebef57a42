"""One shared suite run over every entry of :data:`fedrec.core.models.MODELS` and ``FEATURE_MODELS``.

A model added to either registry is covered automatically: its declared global/local
split, scoring, (de)serialisation, seeding and a tiny training run. Models that need
item features are built with a fixed random ``(n_items, N_FEATURES)`` matrix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap

from fedrec.core.models import MODELS, Recommender, build_model, global_state, load_parameters, local_state
from fedrec.core.models.registry import FEATURE_MODELS, model_class, needs_item_features
from fedrec.core.models.registry import build_model as registry_build_model
from fedrec.core.training.implicit import TrainingConfig, batch_loss, make_optimizer, train_epoch

# 13 users is a size no weight matrix of these models shares by accident. DIM = 8:
# at DIM = 4 some seeds give an MLP whose ReLUs are all dead (see the xfail below).
N_USERS, N_ITEMS, DIM = 13, 7, 8
N_FEATURES = 11  # feature models' F: no other size, and > N_ITEMS so content models can fit any scoring


@pytest.fixture(params=sorted([*MODELS, *FEATURE_MODELS]))
def name(request) -> str:
    """Every registered model; a new entry of MODELS or FEATURE_MODELS runs the whole suite."""
    return request.param


def build(name: str, n_users: int, n_items: int, dim: int, seed: int = 0) -> Recommender:
    """``build_model``, with fixed random features in [0, 1) for the models that need them."""
    features = None
    if needs_item_features(name):
        features = np.random.default_rng(11).random((n_items, N_FEATURES)).astype(np.float32)
    return build_model(name, n_users, n_items, dim, seed=seed, item_features=features)


def make(name: str, seed: int = 0) -> Recommender:
    return build(name, N_USERS, N_ITEMS, DIM, seed=seed)


def all_scores(model: Recommender) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.score_items(torch.arange(N_USERS), torch.arange(N_ITEMS))


def params_equal(a: Recommender, b: Recommender) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


# --- the declared split ------------------------------------------------------------


def test_split_partitions_the_parameters(name: str) -> None:
    model = make(name)
    names = set(dict(model.named_parameters()))
    declared_global = set(model.global_parameter_names)
    declared_local = set(model.local_parameter_names)
    assert declared_global and declared_local
    assert not declared_global & declared_local
    assert declared_global | declared_local == names
    assert len(model.global_parameter_names) == len(declared_global)  # no repeats
    assert len(model.local_parameter_names) == len(declared_local)


def test_local_parameters_are_the_user_embeddings(name: str) -> None:
    model = make(name)
    params = dict(model.named_parameters())
    for local in model.local_parameter_names:
        assert local.endswith("user_embedding.weight"), local
        assert params[local].shape == (N_USERS, DIM)
    # and nothing global is sized by the number of users
    user_sized = {n for n, p in params.items() if p.shape[0] == N_USERS}
    assert user_sized == set(model.local_parameter_names)
    assert not any("user" in g for g in model.global_parameter_names)


def test_a_user_vector_only_changes_that_users_scores(name: str) -> None:
    model = make(name)
    before = all_scores(model)
    with torch.no_grad():
        for p in local_state(model).values():
            p[3] += 1.0
    after = all_scores(model)
    changed_rows = torch.nonzero((after - before).abs().amax(dim=1) > 0).flatten().tolist()
    assert changed_rows == [3]


def test_global_and_local_state(name: str) -> None:
    model = make(name)
    glob, loc = global_state(model), local_state(model)
    assert list(glob) == list(model.global_parameter_names)
    assert list(loc) == list(model.local_parameter_names)
    assert not set(glob) & set(model.local_parameter_names)
    params = dict(model.named_parameters())
    assert all(glob[k] is params[k] for k in glob)  # live tensors, not copies


# --- scoring -----------------------------------------------------------------------


def test_forward_shape(name: str) -> None:
    model = make(name)
    users = torch.tensor([0, 1, 12, 5, 5, 0])
    items = torch.tensor([0, 6, 3, 3, 2, 0])
    out = model(users, items)
    assert out.shape == (6,)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], out[5])  # the same pair scores the same


def test_score_items_equals_forward_on_repeated_pairs(name: str) -> None:
    model = make(name, seed=3)
    model.eval()
    users = torch.tensor([4, 0, 12])
    items = torch.tensor([6, 1, 0, 2])
    with torch.no_grad():
        table = model.score_items(users, items)
        # row j, column i is the pair (users[j], items[i])
        flat = model(users.repeat_interleave(4), items.repeat(3)).view(3, 4)
        single = model(users[2:3], items[1:2])
    assert table.shape == (3, 4)
    torch.testing.assert_close(table, flat, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(table[2, 1:2], single, rtol=1e-5, atol=1e-6)


# --- (de)serialisation -------------------------------------------------------------


def test_state_dict_round_trip_through_a_file(name: str, tmp_path: Path) -> None:
    source, target = make(name, seed=1), make(name, seed=2)
    assert not torch.equal(all_scores(source), all_scores(target))
    torch.save(source.state_dict(), tmp_path / "model.pt")
    target.load_state_dict(torch.load(tmp_path / "model.pt"))
    assert torch.equal(all_scores(source), all_scores(target))


def test_load_parameters_round_trip_of_both_parts(name: str) -> None:
    source, target = make(name, seed=1), make(name, seed=2)
    load_parameters(target, {k: v.detach().clone() for k, v in global_state(source).items()}, "global")
    # global part copied, local part still different
    assert not torch.equal(all_scores(source), all_scores(target))
    load_parameters(target, {k: v.detach().numpy().copy() for k, v in local_state(source).items()}, "local")
    assert torch.equal(all_scores(source), all_scores(target))


def test_load_parameters_rejects_wrong_keys(name: str) -> None:
    model = make(name)
    values = {k: v.detach().clone() for k, v in global_state(model).items()}
    missing = dict(values)
    missing.pop(next(iter(missing)))
    with pytest.raises(KeyError):
        load_parameters(model, missing, "global")
    with pytest.raises(KeyError):
        load_parameters(model, {**values, "extra.weight": torch.zeros(1)}, "global")
    # a local name offered as global is a wrong key, too
    with pytest.raises(KeyError):
        load_parameters(model, {k: v.detach() for k, v in local_state(model).items()}, "global")


def test_load_parameters_rejects_wrong_shapes(name: str) -> None:
    model = make(name)
    for part, state in (("global", global_state(model)), ("local", local_state(model))):
        for bad in state:
            values = {k: v.detach().clone() for k, v in state.items()}
            values[bad] = torch.zeros(*values[bad].shape[:-1], values[bad].shape[-1] + 1)
            with pytest.raises(ValueError, match=bad.replace(".", r"\.")):
                load_parameters(model, values, part)


def test_load_parameters_rejects_unknown_part(name: str) -> None:
    model = make(name)
    with pytest.raises(ValueError, match="part"):
        load_parameters(model, {k: v.detach() for k, v in local_state(model).items()}, "private")


def test_reset_local_parameters_only_touches_the_local_part(name: str) -> None:
    model = make(name)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    model.reset_local_parameters(torch.Generator().manual_seed(7))
    after = dict(model.named_parameters())
    for k in model.global_parameter_names:
        assert torch.equal(before[k], after[k]), k
    for k in model.local_parameter_names:
        assert not torch.equal(before[k], after[k]), k


# --- building ----------------------------------------------------------------------


def test_build_model_is_seeded(name: str) -> None:
    assert params_equal(make(name, seed=5), make(name, seed=5))
    assert not params_equal(make(name, seed=5), make(name, seed=6))
    assert isinstance(make(name), model_class(name))


def test_build_model_leaves_the_global_torch_rng_alone(name: str) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make(name, seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_build_model_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        registry_build_model("nope", N_USERS, N_ITEMS, DIM)


def test_build_model_rejects_bad_sizes(name: str) -> None:
    for sizes in ((0, N_ITEMS, DIM), (N_USERS, 0, DIM), (N_USERS, N_ITEMS, 0)):
        with pytest.raises(ValueError):
            build(name, *sizes)


# --- training ----------------------------------------------------------------------


def toy_interactions() -> tuple[np.ndarray, np.ndarray]:
    """Two taste groups: users 0-5 like items 0-2, users 6-12 like items 4-6."""
    users, items = [], []
    for u in range(N_USERS):
        liked = (0, 1, 2) if u < 6 else (4, 5, 6)
        users += [u] * 3
        items += liked
    return np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)


def test_a_tiny_training_run_decreases_the_loss(name: str) -> None:
    users, items = toy_interactions()
    model = make(name)
    config = TrainingConfig(lr=0.05, batch_size=8, negatives=1, optimizer="adam")
    optimizer = make_optimizer(list(model.parameters()), config)
    # a fixed probe: every positive against item 3, which nobody trained on
    probe = (torch.from_numpy(users), torch.from_numpy(items), torch.full((len(users), 1), 3))
    with torch.no_grad():
        before = batch_loss(model, *probe, "bce").item()
    rng = np.random.default_rng(0)
    losses = [train_epoch(model, optimizer, users, items, config, rng)[0] for _ in range(15)]
    with torch.no_grad():
        after = batch_loss(model, *probe, "bce").item()
    assert after < 0.5 * before
    assert losses[-1] < 0.6 * losses[0]


def test_small_mlp_starts_trainable() -> None:
    users, items = toy_interactions()
    stuck = []
    for seed in range(10):
        model = build_model("mlp", N_USERS, N_ITEMS, 4, seed=seed)
        loss = batch_loss(
            model, torch.from_numpy(users), torch.from_numpy(items), torch.full((len(users), 1), 3), "bce"
        )
        loss.backward()
        if model.item_embedding.weight.grad.abs().max() == 0:
            stuck.append(seed)
    assert stuck == []


def test_item_tables_are_global_and_indexed_by_item(name: str) -> None:
    model = make(name)
    params = dict(model.named_parameters())
    assert model.item_table_names, "every model declares its item tables"
    for table in model.item_table_names:
        assert table in model.global_parameter_names
        assert params[table].shape[0] == N_ITEMS


def test_per_user_gradients_under_vmap_match_a_loop(name: str) -> None:
    """The cohort executor's pattern: ``vmap(grad(L))`` over ``functional_call`` of a
    one-user model, users stacked on a leading axis, equals one backward pass per user."""
    model = build(name, 1, N_ITEMS, DIM, seed=4)
    shared = {k: v.detach() for k, v in global_state(model).items()}
    stacked = {k: torch.randn(3, *v.shape, generator=torch.Generator().manual_seed(5)) * 0.3
               for k, v in local_state(model).items()}
    items = torch.tensor([[0, 3, 6], [1, 1, 2], [5, 4, 0]])

    def loss(local: dict[str, torch.Tensor], shared: dict[str, torch.Tensor], items: torch.Tensor) -> torch.Tensor:
        scores = functional_call(model, {**shared, **local}, (torch.zeros_like(items), items))
        return (scores ** 2).sum()

    batched = vmap(grad(loss, argnums=(0, 1)), in_dims=(0, None, 0))(stacked, shared, items)
    for b in range(3):
        local = {k: v[b].clone().requires_grad_(True) for k, v in stacked.items()}
        glob = {k: v.clone().requires_grad_(True) for k, v in shared.items()}
        loss(local, glob, items[b]).backward()
        for part, values in ((0, local), (1, glob)):
            for k, v in values.items():
                torch.testing.assert_close(batched[part][k][b], v.grad, rtol=1e-5, atol=1e-6)


def test_item_buffers_are_indexed_by_item_and_not_parameters(name: str) -> None:
    model = make(name)
    buffers, params = dict(model.named_buffers()), dict(model.named_parameters())
    for buffer in getattr(model, "item_buffer_names", ()):
        assert buffer in buffers and buffer not in params
        assert buffers[buffer].shape[0] == N_ITEMS
    assert bool(getattr(model, "item_buffer_names", ())) == needs_item_features(name)
