"""Per-example gradients of ``record-distributed``: each against a plain autograd loop over
the examples with the real, full tables (duplicated items included), their norms and
their separate clipping."""

from __future__ import annotations

import math

import pytest
import torch

from fedrec.core.models.base import Recommender, global_state, load_parameters, local_state
from fedrec.core.models.registry import build_model
from fedrec.core.privacy.record_gradients import (
    ExampleChunk,
    clip_factors,
    clipped_gradients,
    local_norms,
    per_example_gradients,
    shared_norms,
)
from fedrec.core.privacy.record_level import record_losses

N_ITEMS, DIM, USERS = 20, 4, 3
MODELS = ("mf", "gmf", "mlp", "neumf")
LOSSES = ("bce", "bpr")

# column 0 the positive; rows 0-2 repeat items (a negative equal to the positive, two equal
# negatives, every lookup the same item), rows 3-5 have distinct items
ITEMS = torch.tensor([[5, 5, 7, 9],
                      [2, 8, 8, 1],
                      [4, 4, 4, 4],
                      [0, 3, 11, 19],
                      [6, 12, 13, 17],
                      [10, 14, 15, 16]])
OWNERS = torch.tensor([0, 1, 2, 0, 1, 2])
DUPLICATED = torch.tensor([True, True, True, False, False, False])


def _parameters(name: str, seed: int = 0) -> tuple[Recommender, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A one-user model, its global arrays moved off their initial values (zero biases, unit
    output weights) so that every gradient is generic, and ``USERS`` stacked local parts."""
    model = build_model(name, 1, N_ITEMS, DIM, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    shared = {n: p.detach() + 0.3 * torch.randn(p.shape, generator=generator)
              for n, p in global_state(model).items()}
    # the tower's last hidden layer always on (positive weights and bias), its first layer on
    # or off by item: no branch is dead, and the scores are not linear in the embeddings
    for n in ("tower.2.weight", "tower.2.bias"):
        if n in shared:
            shared[n] = shared[n].abs() + (0.5 if n.endswith("bias") else 0.0)
    local = {n: 0.5 * torch.randn((USERS, *p.shape), generator=generator) for n, p in local_state(model).items()}
    return model, shared, local


def _autograd_loop(name: str, shared: dict[str, torch.Tensor], local: dict[str, torch.Tensor],
                   owners: torch.Tensor, items: torch.Tensor, loss: str) -> list[dict[str, torch.Tensor]]:
    """Each example's full gradient (every parameter, whole tables), one backward pass each."""
    model = build_model(name, 1, N_ITEMS, DIM)
    load_parameters(model, shared, "global")
    out = []
    for owner, row in zip(owners.tolist(), items):
        load_parameters(model, {n: v[owner] for n, v in local.items()}, "local")
        model.zero_grad()
        record_losses(model(torch.zeros_like(row), row)[None], loss)[0].backward()
        out.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})
    return out


def _scattered(rows: torch.Tensor, items: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """An example's gathered row gradients added into a zero table."""
    return torch.zeros_like(table).index_add_(0, items, rows)


def _shared_norm(full: dict[str, torch.Tensor], model: Recommender) -> float:
    return math.sqrt(sum(float(full[n].double().pow(2).sum()) for n in model.global_parameter_names))


def _local_norm(full: dict[str, torch.Tensor], model: Recommender) -> float:
    return math.sqrt(sum(float(full[n].double().pow(2).sum()) for n in model.local_parameter_names))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("name", MODELS)
def test_per_example_gradients_equal_an_autograd_loop(name: str, loss: str) -> None:
    model, shared, local = _parameters(name)
    grads = per_example_gradients(model, local, shared, ExampleChunk(OWNERS, ITEMS), loss)
    reference = _autograd_loop(name, shared, local, OWNERS, ITEMS, loss)
    tables = set(model.item_table_names)
    assert set(grads.local) == set(model.local_parameter_names)
    assert set(grads.rows) == tables
    assert set(grads.dense) == set(model.global_parameter_names) - tables
    for e, full in enumerate(reference):
        for n, g in grads.local.items():
            assert g.shape == (len(ITEMS), *local[n].shape[1:])
            torch.testing.assert_close(g[e], full[n], rtol=1e-5, atol=1e-7)
        for n, g in grads.rows.items():
            assert g.shape == (len(ITEMS), ITEMS.shape[1], *shared[n].shape[1:])
            torch.testing.assert_close(_scattered(g[e], ITEMS[e], shared[n]), full[n], rtol=1e-5, atol=1e-7)
        for n, g in grads.dense.items():
            torch.testing.assert_close(g[e], full[n], rtol=1e-5, atol=1e-7)
    # not vacuous: every part of the gradient is nonzero
    for part in (grads.local, grads.rows, grads.dense):
        if part:
            assert max(float(g.abs().max()) for g in part.values()) > 1e-3


def test_stacked_locals_are_indexed_by_owner() -> None:
    """Swapping two users' local parameters and their owners gives the same gradients."""
    model, shared, local = _parameters("neumf")
    chunk = ExampleChunk(OWNERS, ITEMS)
    grads = per_example_gradients(model, local, shared, chunk, "bce")
    swapped = {n: v[[1, 0, 2]] for n, v in local.items()}
    owners = torch.tensor([1, 0, 2])[OWNERS]
    again = per_example_gradients(model, swapped, shared, ExampleChunk(owners, ITEMS), "bce")
    for part, other in ((grads.local, again.local), (grads.rows, again.rows), (grads.dense, again.dense)):
        for n in part:
            torch.testing.assert_close(part[n], other[n])
    # and the owner matters: every example given user 0's parameters changes the gradients
    moved = per_example_gradients(model, local, shared, ExampleChunk(torch.zeros_like(OWNERS), ITEMS), "bce")
    assert not torch.allclose(moved.rows["gmf_item_embedding.weight"][1], grads.rows["gmf_item_embedding.weight"][1])


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("name", MODELS)
def test_shared_and_local_norms_are_those_of_the_full_gradient(name: str, loss: str) -> None:
    model, shared, local = _parameters(name)
    grads = per_example_gradients(model, local, shared, ExampleChunk(OWNERS, ITEMS), loss)
    reference = _autograd_loop(name, shared, local, OWNERS, ITEMS, loss)
    expected_shared = torch.tensor([_shared_norm(full, model) for full in reference], dtype=torch.float64)
    expected_local = torch.tensor([_local_norm(full, model) for full in reference], dtype=torch.float64)
    torch.testing.assert_close(shared_norms(grads, ITEMS), expected_shared, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(local_norms(grads), expected_local, rtol=1e-5, atol=1e-6)
    # the naive norm (every gathered row counted apart) agrees without repeats and not with
    # them: there the squares differ by a sizeable share of the rows' own squares
    rows_squared = sum(g.reshape(len(ITEMS), -1).double().pow(2).sum(dim=1) for g in grads.rows.values())
    dense_squared = sum((g.reshape(len(ITEMS), -1).double().pow(2).sum(dim=1) for g in grads.dense.values()),
                        torch.zeros(len(ITEMS), dtype=torch.float64))
    naive = (rows_squared + dense_squared).sqrt()
    torch.testing.assert_close(naive[~DUPLICATED], expected_shared[~DUPLICATED], rtol=1e-5, atol=1e-6)
    gap = (naive.pow(2) - expected_shared.pow(2)).abs()
    assert bool((gap[DUPLICATED] > 1e-2 * rows_squared[DUPLICATED]).all()), (naive, expected_shared)


def test_a_positive_repeated_as_every_negative_has_no_table_gradient_under_bpr() -> None:
    """bpr of ``(i, i, i, i)``: the rows cancel exactly (every difference is 0), the naive
    norm does not; the true shared norm is the dense layers' alone."""
    model, shared, local = _parameters("gmf")
    items = torch.tensor([[4, 4, 4, 4]])
    grads = per_example_gradients(model, local, shared, ExampleChunk(torch.tensor([0]), items), "bpr")
    rows = grads.rows["item_embedding.weight"][0]
    assert float(rows.norm()) > 1e-3
    assert float(rows.sum(dim=0).norm()) < 1e-6
    dense = math.sqrt(sum(float(g[0].double().pow(2).sum()) for g in grads.dense.values()))
    assert float(shared_norms(grads, items)[0]) == pytest.approx(dense, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("part", ["shared", "local"])
@pytest.mark.parametrize("name", MODELS)
def test_clipping_bounds_each_part_and_leaves_small_ones_alone(name: str, part: str) -> None:
    model, shared, local = _parameters(name)
    chunk = ExampleChunk(OWNERS, ITEMS)
    raw = per_example_gradients(model, local, shared, chunk, "bce")
    reference = _autograd_loop(name, shared, local, OWNERS, ITEMS, "bce")
    shared_ref = [_shared_norm(full, model) for full in reference]
    local_ref = [_local_norm(full, model) for full in reference]
    # a clip among the norms of one part: some of its examples are clipped and some are not
    norms = shared_ref if part == "shared" else local_ref
    ranked = sorted(norms)
    clip = (ranked[2] + ranked[3]) / 2
    assert ranked[2] < clip * 0.999 and ranked[3] > clip * 1.001
    clipped = clipped_gradients(model, local, shared, chunk, "bce", clip)
    tables = set(model.item_table_names)
    for e, full in enumerate(reference):
        local_factor = min(1.0, clip / local_ref[e])
        shared_factor = min(1.0, clip / shared_ref[e])
        clipped_local = {n: clipped.local[n][e] for n in model.local_parameter_names}
        clipped_shared = {n: _scattered(clipped.rows[n][e], ITEMS[e], shared[n]) if n in tables
                          else clipped.dense[n][e] for n in model.global_parameter_names}
        assert _local_norm(clipped_local, model) <= clip + 1e-6
        assert _shared_norm(clipped_shared, model) <= clip + 1e-6
        for n, g in clipped_local.items():
            torch.testing.assert_close(g, full[n] * local_factor, rtol=1e-5, atol=1e-7)
        for n, g in clipped_shared.items():
            torch.testing.assert_close(g, full[n] * shared_factor, rtol=1e-5, atol=1e-7)
        if local_factor == 1.0:  # under C: untouched
            for n in clipped.local:
                assert torch.equal(clipped.local[n][e], raw.local[n][e])
        else:  # over C: brought to C exactly
            assert _local_norm(clipped_local, model) == pytest.approx(clip, rel=1e-5)
        if shared_factor == 1.0:
            for after, before in ((clipped.rows, raw.rows), (clipped.dense, raw.dense)):
                for n in after:
                    assert torch.equal(after[n][e], before[n][e])
        else:
            assert _shared_norm(clipped_shared, model) == pytest.approx(clip, rel=1e-5)


def test_clip_factors() -> None:
    norms = torch.tensor([0.0, 0.5, 1.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(clip_factors(norms, 1.0), torch.tensor([1.0, 1.0, 1.0, 0.25], dtype=torch.float64))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="clip C must be > 0"):
            clip_factors(norms, bad)


def test_an_example_chunk_refuses_mismatched_shapes_and_no_negatives() -> None:
    with pytest.raises(ValueError, match="owners must be"):
        ExampleChunk(torch.zeros((2, 1), dtype=torch.int64), torch.zeros((2, 3), dtype=torch.int64))
    with pytest.raises(ValueError, match="owners must be"):
        ExampleChunk(torch.zeros(2, dtype=torch.int64), torch.zeros(6, dtype=torch.int64))
    with pytest.raises(ValueError, match="owners must be"):
        ExampleChunk(torch.zeros(3, dtype=torch.int64), torch.zeros((2, 3), dtype=torch.int64))
    with pytest.raises(ValueError, match="at least one negative"):
        ExampleChunk(torch.zeros(2, dtype=torch.int64), torch.zeros((2, 1), dtype=torch.int64))
    chunk = ExampleChunk(torch.zeros(2, dtype=torch.int64), torch.zeros((2, 2), dtype=torch.int64))
    assert chunk.items.shape == (2, 2)
