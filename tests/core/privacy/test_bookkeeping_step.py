"""Book-keeping clipping (one backward) against a per-example autograd loop, and its noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedrec.core.models.registry import build_model
from fedrec.core.privacy.bookkeeping_step import BookkeepingStep
from fedrec.core.privacy.record_level import record_examples, record_losses
from fedrec.core.privacy.secure_random import SecureRandom

N_ITEMS, DIM = 40, 8
KEY = bytes(range(32))


def batch(seed: int, b: int = 6, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    positives = torch.from_numpy(rng.choice(N_ITEMS, size=b, replace=False).astype(np.int64))
    negatives = torch.from_numpy(rng.integers(0, N_ITEMS, size=(b, k)).astype(np.int64))
    negatives[0, 1] = negatives[0, 0]  # an item twice in one example: its rows add before the norm
    negatives[1, 0] = positives[1]
    return positives, negatives


def loop_clipped_sum(model: nn.Module, positives: torch.Tensor, negatives: torch.Tensor, clip: float,
                     loss: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``Σ_i min(1, C/‖g_i‖) g_i`` from one autograd call per example, and the norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    users, items = record_examples(positives, negatives)
    per_example = []
    for i in range(len(positives)):
        ell = record_losses(model(users[i:i + 1], items[i:i + 1]), loss)[0]
        per_example.append([g.double() for g in torch.autograd.grad(ell, params)])
    norms = torch.stack([torch.sqrt(sum((g ** 2).sum() for g in gs)) for gs in per_example])
    factors = (clip / norms).clamp(max=1.0)
    total = [sum(f * gs[j] for f, gs in zip(factors, per_example)) for j in range(len(params))]
    return total, norms


@pytest.mark.parametrize("model_name", ["mf", "gmf", "mlp", "neumf"])
@pytest.mark.parametrize("loss", ["bce", "bpr"])
def test_clipped_sum_equals_the_per_example_loop(model_name: str, loss: str) -> None:
    model = build_model(model_name, 1, N_ITEMS, DIM, 0)
    positives, negatives = batch(1)
    _, norms = loop_clipped_sum(model, positives, negatives, 1.0, loss)
    clip = float(norms.median())  # about half the examples clipped
    expected, _ = loop_clipped_sum(model, positives, negatives, clip, loss)
    with BookkeepingStep(model, clip, 0.0, loss, SecureRandom(KEY)) as step:
        losses = step.gradients(positives, negatives, divisor=4.0)
    for p, e in zip([p for p in model.parameters() if p.requires_grad], expected):
        torch.testing.assert_close(p.grad.double(), e / 4.0, rtol=1e-5, atol=1e-7)
    users, items = record_examples(positives, negatives)
    torch.testing.assert_close(losses, record_losses(model(users, items), loss).detach())


def test_frozen_parameters_are_left_out_of_the_norms() -> None:
    model = build_model("neumf", 1, N_ITEMS, DIM, 0)
    for name, p in model.named_parameters():
        p.requires_grad_(name.endswith("user_embedding.weight"))  # phase 1: the user vectors only
    positives, negatives = batch(2)
    expected, _ = loop_clipped_sum(model, positives, negatives, 0.05, "bce")
    with BookkeepingStep(model, 0.05, 0.0, "bce", SecureRandom(KEY)) as step:
        step.gradients(positives, negatives, divisor=1.0)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert len(trained) == 2
    for p, e in zip(trained, expected):
        torch.testing.assert_close(p.grad.double(), e, rtol=1e-5, atol=1e-8)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_every_coordinate_carries_noise_of_std_sigma_c_over_b() -> None:
    model = build_model("mf", 1, 500, 16, 0)
    positives, negatives = batch(3)
    with BookkeepingStep(model, 0.5, 2.0, "bce", SecureRandom(KEY)) as noisy:
        noisy.gradients(positives, negatives, divisor=8.0)
    noised = torch.cat([p.grad.flatten() for p in model.parameters()])
    with BookkeepingStep(model, 0.5, 0.0, "bce", SecureRandom(KEY)) as clean:
        clean.gradients(positives, negatives, divisor=8.0)
    clipped = torch.cat([p.grad.flatten() for p in model.parameters()])
    noise = (noised - clipped).double()
    assert len(noise) == 500 * 17 + 16
    assert abs(float(noise.std()) / (2.0 * 0.5 / 8.0) - 1) < 0.03
    assert abs(float(noise.mean())) < 0.05 * 2.0 * 0.5 / 8.0
    assert float((noise == 0).double().mean()) < 1e-3  # no coordinate left un-noised


def test_an_empty_batch_is_a_noise_only_step() -> None:
    model = build_model("gmf", 1, N_ITEMS, DIM, 0)
    with BookkeepingStep(model, 1.0, 1.0, "bce", SecureRandom(KEY)) as step:
        losses = step.gradients(torch.zeros(0, dtype=torch.int64), torch.zeros((0, 3), dtype=torch.int64), 2.0)
    assert len(losses) == 0
    assert all(float(p.grad.abs().sum()) > 0 for p in model.parameters())


def test_forwards_outside_a_step_keep_nothing() -> None:
    model = build_model("neumf", 1, N_ITEMS, DIM, 0)
    with BookkeepingStep(model, 1.0, 0.0, "bce", SecureRandom(KEY)) as step:
        users, items = record_examples(*batch(6))
        model(users, items)  # scoring between steps
        assert step._saved == []
        positives, negatives = batch(7)
        step.gradients(positives, negatives, 1.0)
    expected, _ = loop_clipped_sum(model, positives, negatives, 1.0, "bce")
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad.double(), e, rtol=1e-5, atol=1e-8)


def test_two_generators_with_fresh_keys_draw_unrelated_noise() -> None:
    model = build_model("mf", 1, N_ITEMS, DIM, 0)
    positives, negatives = batch(4)
    grads = []
    for _ in range(2):
        with BookkeepingStep(model, 1.0, 1.0, "bce", SecureRandom()) as step:
            step.gradients(positives, negatives, 1.0)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert abs(float(torch.corrcoef(torch.stack(grads))[0, 1])) < 0.2


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.items = nn.Embedding(N_ITEMS, DIM)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.items(items).sum(-1) * self.scale


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(N_ITEMS, DIM)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.table(users) * self.table(items)).sum(-1)


class _TableWide(nn.Module):
    """Projects the whole item table, then looks rows up: the layer's rows are not per example."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.randn(N_ITEMS, 5)
        self.projection = nn.Linear(5, DIM)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features)[items].sum(-1)


def test_models_it_cannot_clip_are_refused() -> None:
    with pytest.raises(ValueError, match="not one entry per example"):
        BookkeepingStep(_TableWide(), 1.0, 1.0, "bce", SecureRandom(KEY)).gradients(*batch(8), divisor=1.0)
    with pytest.raises(ValueError, match="scale"):
        BookkeepingStep(_Scaled(), 1.0, 1.0, "bce", SecureRandom(KEY))
    step = BookkeepingStep(_Shared(), 1.0, 1.0, "bce", SecureRandom(KEY))
    with pytest.raises(ValueError, match="shared weights"):
        step.gradients(*batch(5), divisor=1.0)
    with pytest.raises(TypeError, match="SecureRandom"):
        BookkeepingStep(build_model("mf", 1, N_ITEMS, DIM, 0), 1.0, 1.0, "bce", np.random.default_rng(0))
    with pytest.raises(ValueError, match="clip"):
        BookkeepingStep(build_model("mf", 1, N_ITEMS, DIM, 0), 0.0, 1.0, "bce", SecureRandom(KEY))
    padded = build_model("mf", 1, N_ITEMS, DIM, 0)
    padded.item_embedding.padding_idx = 0  # its lookups get no gradient; the clipped sum would give them one
    with pytest.raises(ValueError, match="padding_idx"):
        BookkeepingStep(padded, 1.0, 1.0, "bce", SecureRandom(KEY))


def test_normal_tensor_is_standard_normals_transform_on_the_same_keystream() -> None:
    fast = SecureRandom(KEY, stream=3).normal_tensor(10_001, 1.0)
    reference = SecureRandom(KEY, stream=3).standard_normal(10_002)[:10_001]
    np.testing.assert_allclose(fast.numpy(), reference, rtol=1e-12, atol=1e-12)
    scaled = SecureRandom(KEY, stream=3).normal_tensor(10_001, 2.5)
    np.testing.assert_allclose(scaled.numpy(), 2.5 * reference, rtol=1e-12, atol=1e-12)
    assert SecureRandom(KEY).normal_tensor(0, 1.0).shape == (0,)
    with pytest.raises(ValueError):
        SecureRandom(KEY).normal_tensor(3, -1.0)


def test_normal_tensor_passes_a_distribution_test() -> None:
    from scipy import stats

    draws = SecureRandom(KEY, stream=9).normal_tensor(200_000, 1.0).numpy()
    assert stats.kstest(draws, "norm").pvalue > 1e-3
    assert abs(draws.mean()) < 0.01 and abs(draws.std() - 1) < 0.01
