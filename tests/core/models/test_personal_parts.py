"""personal=head: a model's score layers are declared local — trained per user, never in a reply,
never aggregated or noised — in the built model, the family's parts, both executors, the
user-level DP rounds and the driver; and the options' refusals."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedrec.core.config.run_config import RunConfig
from fedrec.core.families.implicit import ImplicitFamily, run_split
from fedrec.core.federation.driver import run_federation
from fedrec.core.models.personal import local_bytes, score_head_names
from fedrec.core.models.registry import build_model
from fedrec.core.privacy.client_round import private_train_users
from fedrec.core.training.cohort import cohort_round
from fedrec.core.training.local_round import new_local_parameters, user_round

DATASET = "synthetic-16"  # 16 users, 8 to 64 training items each
HEAD_MODELS = ("gmf", "mlp", "neumf")
# what each model's score layers are, written out (not derived from the code under test)
EXPECTED_HEAD_PREFIXES = {"gmf": ("output.",), "mlp": ("tower.", "output."), "neumf": ("tower.", "output.")}


def _config(model: str, **settings: object) -> RunConfig:
    base = dict(model=model, dataset=DATASET, dim=8, batch_size=8, personal="head")
    return RunConfig(**{**base, **settings})


def _users(config: RunConfig, count: int | None = None, for_evaluation: bool = False):
    split = run_split(config)
    chosen = range(split.n_users if count is None else count)
    return split, [split.user_data(u, for_evaluation=for_evaluation) for u in chosen]


def _head_of(model: str) -> tuple[str, ...]:
    """The non-item, non-projection global names of the *plain* model."""
    plain = build_model(model, 1, 10, 8)
    item_side = set(plain.item_table_names) | set(getattr(plain, "item_side_names", ()))
    return tuple(n for n in plain.global_parameter_names if n not in item_side)


# --- the built model -------------------------------------------------------------------------


@pytest.mark.parametrize("model", HEAD_MODELS)
def test_head_moves_the_score_layers_from_the_global_to_the_local_part(model: str) -> None:
    plain = build_model(model, 1, 10, 8, seed=5)
    headed = build_model(model, 1, 10, 8, seed=5, personal="head")
    head = _head_of(model)
    assert head and all(name.startswith(EXPECTED_HEAD_PREFIXES[model]) for name in head)
    assert {n for n in plain.global_parameter_names if n.startswith(EXPECTED_HEAD_PREFIXES[model])} == set(head)
    assert score_head_names(plain) == head
    assert headed.score_head == head
    # the global part keeps exactly the item tables; the local part gains the head
    assert set(headed.global_parameter_names) == set(plain.item_table_names)
    assert not set(head) & set(headed.global_parameter_names)
    assert tuple(headed.local_parameter_names) == (*plain.local_parameter_names, *head)
    headed.check_split()
    # the parameters' values are those of the plain model (only the declaration moves)
    plain_params, headed_params = dict(plain.named_parameters()), dict(headed.named_parameters())
    assert set(plain_params) == set(headed_params)
    for name, value in plain_params.items():
        assert np.array_equal(value.detach().numpy(), headed_params[name].detach().numpy()), name
    # a user stores its head: the local part is bigger by the head's float32 parameters
    head_bytes = sum(plain_params[n].numel() * 4 for n in head)
    assert local_bytes(headed) == local_bytes(plain) + head_bytes
    # the class declaration is not changed: a plain model built afterwards keeps its head global
    again = build_model(model, 1, 10, 8)
    assert set(head) <= set(again.global_parameter_names) and not set(head) & set(again.local_parameter_names)


@pytest.mark.parametrize("model", HEAD_MODELS)
def test_the_family_parts_exclude_the_head_from_the_global_part(model: str) -> None:
    config = _config(model)
    split = run_split(config)
    family = ImplicitFamily()
    parts = family.parts(config, split.n_items)
    plain = family.parts(replace(config, personal="none"), split.n_items)
    head = _head_of(model)
    assert set(plain.global_names) - set(parts.global_names) == set(head)
    assert not set(head) & set(parts.global_names)
    assert set(head) <= set(parts.local_names)
    assert set(parts.local_names) == set(plain.local_names) | set(head)
    assert sorted(family.initial_global(config, split)) == sorted(parts.global_names)
    assert sorted(family.initial_global(replace(config, personal="none"), split)) == sorted(plain.global_names)


# --- training: per-client and cohort ----------------------------------------------------------


@pytest.mark.parametrize("model", HEAD_MODELS)
def test_a_user_round_trains_its_head_locally_and_never_replies_with_it(model: str) -> None:
    config = _config(model, local_epochs=2)
    split, users = _users(config, 3)
    family = ImplicitFamily()
    parts = family.parts(config, split.n_items)
    head = _head_of(model)
    arrays = family.initial_global(config, split)
    results = [user_round(config, arrays, None, user, 1) for user in users]
    for user, result in zip(users, results):
        assert set(result.update) == set(parts.global_names)  # exactly: no head key
        assert set(result.local) == set(parts.local_names)
        assert any(np.any(v != 0) for v in result.update.values())
        initial = new_local_parameters(model, split.n_items, config.dim, config.seed, user.user, personal="head")
        for name in head:
            assert result.local[name].shape == parts.shapes[name]
            assert np.any(result.local[name] != initial[name]), f"head {name} did not train"
    for name in head:
        assert not np.array_equal(results[0].local[name], results[1].local[name]), name
    # a stored head is where the next round starts
    second = user_round(config, arrays, results[0].local, users[0], 2)
    assert any(not np.array_equal(second.local[n], results[0].local[n]) for n in head)


def _stored_mix(config: RunConfig, users, arrays) -> list:
    """Every other user comes with its locals (head included) from an earlier round."""
    return [user_round(config, arrays, None, u, 1).local if i % 2 else None for i, u in enumerate(users)]


@pytest.mark.parametrize("model", HEAD_MODELS)
def test_the_cohort_executor_keeps_the_head_local_and_matches_the_per_client_round(model: str) -> None:
    config = _config(model, executor="cohort", local_epochs=2)
    split, users = _users(config, 8)
    family = ImplicitFamily()
    parts = family.parts(config, split.n_items)
    head = _head_of(model)
    arrays = family.initial_global(config, split)
    stored = _stored_mix(config, users, arrays)
    reference = [user_round(config, arrays, s, u, 2) for s, u in zip(stored, users)]
    cohort = cohort_round(config, arrays, stored, users, 2, keep_updates=True)
    assert set(cohort.update_sum) == set(parts.global_names)
    assert cohort.users == [u.user for u in users] and cohort.updates is not None
    for ref, update, local, start, n, loss in zip(reference, cohort.updates, cohort.locals, stored,
                                                  cohort.num_examples, cohort.losses):
        assert set(update) == set(parts.global_names) and set(local) == set(parts.local_names)
        for name in ref.update:
            np.testing.assert_allclose(update[name], ref.update[name], atol=2e-5, rtol=1e-4)
        for name in ref.local:
            np.testing.assert_allclose(local[name], ref.local[name], atol=2e-5, rtol=1e-4)
        assert n == ref.num_examples and loss == pytest.approx(ref.loss, rel=1e-5, abs=1e-6)
        if start is not None:  # the stored head moved on from where it was
            assert any(not np.allclose(local[name], start[name]) for name in head)
    for name in head:
        assert not np.allclose(cohort.locals[0][name], cohort.locals[1][name]), name
    # the summed update is the example-weighted sum of the per-user ones
    for name in parts.global_names:
        expected = sum(n * u[name].astype(np.float64) for n, u in zip(cohort.num_examples, cohort.updates))
        np.testing.assert_allclose(cohort.update_sum[name], expected, atol=1e-4, rtol=1e-5)


# --- user-level DP: the released update has no head ---------------------------------------------


@pytest.mark.parametrize("executor", ["per-client", "cohort"])
def test_an_update_transform_sees_and_sums_only_the_global_part(executor: str) -> None:
    config = _config("neumf", executor=executor)
    split, users = _users(config, 6)
    family = ImplicitFamily()
    parts = family.parts(config, split.n_items)
    arrays = family.initial_global(config, split)
    seen: list[set[str]] = []

    def transform(update):
        seen.append(set(update))
        return {k: np.full_like(v, 0.5) for k, v in update.items()}

    result = family.train_users(config, arrays, [None] * len(users), users, 1, update_transform=transform)
    assert len(seen) == len(users) and all(keys == set(parts.global_names) for keys in seen)
    assert set(result.update_sum) == set(parts.global_names)
    assert result.weight == len(users)
    for name, value in result.update_sum.items():  # Σ transform(Δ_b): the transform's values, summed
        np.testing.assert_array_equal(value, np.full_like(value, 0.5 * len(users)))
    # the locals are those of the plain round: the head went through no transform
    plain = family.train_users(replace(config, executor="per-client"), arrays, [None] * len(users), users, 1)
    for mine, ref in zip(result.locals, plain.locals):
        assert set(mine) == set(parts.local_names)
        for name in ref:
            np.testing.assert_allclose(mine[name], ref[name], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["user-central", "user-local"])
@pytest.mark.parametrize("executor", ["per-client", "cohort"])
def test_private_rounds_release_no_head(mode: str, executor: str) -> None:
    config = _config("gmf", executor=executor, dp=mode, noise_multiplier=1.0, clip=0.5)
    split, users = _users(config, 5)
    family = ImplicitFamily()
    parts = family.parts(config, split.n_items)
    arrays = family.initial_global(config, split)
    private = private_train_users(config, arrays, [None] * len(users), users, 1, [[] for _ in users])
    result = private.result
    assert set(result.update_sum) == set(parts.global_names)
    assert result.weight == len(users) and len(private.releases) == len(users)
    if mode == "user-central":  # each Δ clipped to C: the sum of 5 is within 5C
        norm = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in result.update_sum.values()))
        assert norm <= len(users) * config.clip * (1 + 1e-6)
    plain = [user_round(config, arrays, None, u, 1) for u in users]
    for mine, ref in zip(result.locals, plain):  # the head kept on the device is neither clipped nor noised
        assert set(mine) == set(parts.local_names)
        for name in ("output.weight", "output.bias"):
            np.testing.assert_allclose(mine[name], ref.local[name], atol=2e-5, rtol=1e-4)


def test_a_federated_run_with_a_local_head_returns_a_global_part_without_it() -> None:
    config = _config("gmf", executor="cohort", rounds=2, clients_per_round=6, eval_every=1, eval_k=5)
    result = run_federation(config)
    family = ImplicitFamily()
    parts = family.parts(config, run_split(config).n_items)
    assert set(result.arrays) == set(parts.global_names)
    assert result.locals and all(set(a) == set(parts.local_names) for a in result.locals.values())
    heads = [a["output.weight"] for a in result.locals.values()]
    assert any(not np.array_equal(heads[0], h) for h in heads[1:])
    assert all(0 <= row["hr@5"] <= 1 for row in result.rows)


# --- fresh locals ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", HEAD_MODELS)
def test_fresh_locals_share_the_seeded_head_and_draw_their_own_user_vectors(model: str) -> None:
    head = _head_of(model)
    plain = build_model(model, 1, 10, 8)
    a = new_local_parameters(model, 40, 8, 3, user=1, personal="head")
    b = new_local_parameters(model, 40, 8, 3, user=2, personal="head")
    assert set(a) == set(b) == set(plain.local_parameter_names) | set(head)
    for name in head:
        np.testing.assert_array_equal(a[name], b[name])
    for name in plain.local_parameter_names:
        assert not np.allclose(a[name], b[name]), name
    # the user vectors are those personal none draws for the same (seed, user)
    none = new_local_parameters(model, 40, 8, 3, user=1)
    assert set(none) == set(plain.local_parameter_names)
    for name in plain.local_parameter_names:
        np.testing.assert_array_equal(a[name], none[name])
    # the head starts from the model's initial head: GMF's is a plain dot product (h = 1, c = 0);
    # the towers are drawn from the run's seed
    other_seed = new_local_parameters(model, 40, 8, 4, user=1, personal="head")
    if model == "gmf":
        np.testing.assert_array_equal(a["output.weight"], np.ones((1, 8), np.float32))
        np.testing.assert_array_equal(a["output.bias"], np.zeros(1, np.float32))
        assert all(np.array_equal(a[n], other_seed[n]) for n in head)
    else:
        assert any(not np.array_equal(a[n], other_seed[n]) for n in head)
    # a later draw does not change an earlier one
    again = new_local_parameters(model, 40, 8, 3, user=1, personal="head")
    for name in a:
        np.testing.assert_array_equal(a[name], again[name])


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("settings, message", [
    (dict(model="mf", personal="head"), "personal head: model mf has no score layer"),
    (dict(model="hybrid", personal="head"), "personal head: model hybrid has no score layer"),
    (dict(model="content", personal="head+tune"), "personal head\\+tune: model content"),
    (dict(model="sasrec", personal="tune"), "personal tune: model sasrec is not an implicit"),
    (dict(model="explicit-mf", personal="tune"), "personal tune: model explicit-mf is not an implicit"),
    (dict(model="item-knn", personal="tune"), "personal tune: model item-knn is not an implicit"),
    (dict(model="gmf", personal="head", dp="record", noise_multiplier=1.0), "personal head: dp record"),
    (dict(model="neumf", personal="head+tune", dp="record", noise_multiplier=1.0), "personal head\\+tune: dp record"),
    (dict(model="gmf", model_selection="best-validation", dp="user-central", noise_multiplier=1.0),
     "model-selection best-validation under DP"),
    (dict(model="gmf", model_selection="best-validation", dp="user-local", noise_multiplier=1.0),
     "model-selection best-validation under DP"),
    (dict(model="sasrec", model_selection="best-validation"), "model-selection best-validation: model sasrec"),
    (dict(model="gmf", personal="bogus"), "unknown personal option 'bogus'"),
    (dict(model="gmf", personal="tune", tune_epochs=-1), "tune-epochs must be"),
    (dict(model="gmf", personal="tune", tune_lr=-0.1), "tune-lr must be"),
    (dict(model="gmf", protocol="ncf-loo", catalogue="items.txt"), "protocol ncf-loo"),
    (dict(model="gmf", protocol="bogus"), "unknown protocol 'bogus'"),
])
def test_what_the_options_do_not_cover_is_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunConfig(**settings)


@pytest.mark.parametrize("settings", [
    dict(model="gmf", personal="head"), dict(model="mlp", personal="head+tune"), dict(model="mf", personal="tune"),
    dict(model="hybrid", personal="tune"), dict(model="neumf", personal="head", dp="user-central",
                                                noise_multiplier=1.0),
    dict(model="gmf", protocol="ncf-loo"), dict(model="mf", model_selection="best-validation"),
])
def test_what_the_options_cover_is_accepted(settings: dict) -> None:
    config = RunConfig(**settings)
    assert all(getattr(config, k) == v for k, v in settings.items())
