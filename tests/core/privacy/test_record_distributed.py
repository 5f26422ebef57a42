"""``dp record-distributed``: the plan's ε recomputed from its parameters, the rounding, one
record's integer sensitivity, a round's arithmetic against an autograd loop, the noise,
and the refusals."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from fedrec.core.models.base import Recommender, global_state, load_parameters, local_state
from fedrec.core.models.registry import build_model
from fedrec.core.privacy import record_distributed as rd
from fedrec.core.privacy.record_gradients import ExampleChunk
from fedrec.core.privacy.record_level import record_losses
from fedrec.core.privacy.secure_random import SecureRandom

N_ITEMS, DIM, NEGATIVES = 20, 4, 3
KEY = b"k" * 32


class _UnitNormals(SecureRandom):
    """A generator whose Gaussian draws are all 1 (everything else as a SecureRandom's)."""

    def standard_normal(self, size=None):  # noqa: ANN001, ANN201 - numpy's signature
        return np.ones(size) if size is not None else 1.0


def _federation(name: str, n_clients: int, seed: int = 0) -> tuple[Recommender, dict[str, np.ndarray],
                                                                   dict[str, torch.Tensor]]:
    """A one-user model, global arrays moved off their initial values (no dead ReLU, no zero
    bias), and ``n_clients`` stacked local parts."""
    model = build_model(name, 1, N_ITEMS, DIM, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    shared = {n: p.detach() + 0.3 * torch.randn(p.shape, generator=generator)
              for n, p in global_state(model).items()}
    for n in ("tower.2.weight", "tower.2.bias"):
        if n in shared:
            shared[n] = shared[n].abs() + (0.5 if n.endswith("bias") else 0.0)
    local = {n: 0.5 * torch.randn((n_clients, *p.shape), generator=generator) for n, p in local_state(model).items()}
    return model, {n: v.numpy().astype(np.float32) for n, v in shared.items()}, local


def _clipped_sums(name: str, shared: dict[str, np.ndarray], local: dict[str, torch.Tensor], chunk: ExampleChunk,
                  loss: str, clip: float) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """Σ of the clipped shared gradients and, per client, of the clipped local ones: one
    backward pass per example on the full tables, each part clipped to ``clip`` by its norm."""
    model = build_model(name, 1, N_ITEMS, DIM)
    load_parameters(model, {n: torch.from_numpy(v) for n, v in shared.items()}, "global")
    shared_sum = {n: np.zeros(v.shape) for n, v in shared.items()}
    local_sum = {n: torch.zeros(v.shape, dtype=torch.float64) for n, v in local.items()}
    for owner, row in zip(chunk.owners.tolist(), chunk.items):
        load_parameters(model, {n: v[owner] for n, v in local.items()}, "local")
        model.zero_grad()
        record_losses(model(torch.zeros_like(row), row)[None], loss)[0].backward()
        grads = {n: p.grad.double() for n, p in model.named_parameters()}
        shared_norm = math.sqrt(sum(float(grads[n].pow(2).sum()) for n in shared))
        local_norm = math.sqrt(sum(float(grads[n].pow(2).sum()) for n in local))
        for n in shared:
            shared_sum[n] += grads[n].numpy() * min(1.0, clip / shared_norm)
        for n in local:
            local_sum[n][owner] += grads[n] * min(1.0, clip / local_norm)
    return shared_sum, local_sum


def _lookups(shared: dict[str, np.ndarray], model: Recommender, chunk: ExampleChunk) -> dict[str, np.ndarray]:
    """Per coordinate, how many rounded entries land on it: each adds a rounding error < 1."""
    counts = np.bincount(chunk.items.reshape(-1).numpy(), minlength=N_ITEMS).astype(np.float64)
    return {n: (np.broadcast_to(counts.reshape(-1, *[1] * (v.ndim - 1)), v.shape) if n in model.item_table_names
                else np.full(v.shape, float(len(chunk.owners)))) for n, v in shared.items()}


def _plan(layout: rd.Layout, *, clip: float, scale: float, share_std: float, n_clients: int,
          bits: int = 40) -> rd.RecordPlan:
    return rd.RecordPlan(clip=clip, scale=scale, bits=bits, share_std=share_std, n_clients=n_clients,
                         n_min=n_clients, layout=layout, rounds=1, delta=1e-5, eval_noise_multiplier=0.0,
                         eval_releases=0, epsilon_target=1.0, wrap_probability=0.0)


def _no_discrete_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rd, "sample_discrete_gaussian", lambda sigma, size, rng: np.zeros(size, dtype=np.int64))


def _fixed_examples(monkeypatch: pytest.MonkeyPatch, chunk: ExampleChunk,
                    records: list[np.ndarray] | None = None) -> None:
    def examples_of(given, n_items, negatives, rng):  # noqa: ANN001, ANN202
        assert n_items == N_ITEMS and negatives == NEGATIVES
        if records is not None:
            assert [list(r) for r in given] == [list(r) for r in records]
        return chunk

    monkeypatch.setattr(rd, "examples_of", examples_of)


# ---- accounting ---------------------------------------------------------------------------------


def _tau(sigma: float, n: int) -> float:
    return 10.0 * sum(math.exp(-2.0 * math.pi ** 2 * sigma ** 2 * k / (k + 1)) for k in range(1, n))


def _shared_rho(sigma: float, n: int, l2: float, l1: float, dim: int) -> float:
    """KLS21: ε̂ = min{√(Δ₂²/(nσ²) + τd/2), Δ₂/(√n σ) + τΔ₁}, ρ = ε̂²/2."""
    t = _tau(sigma, n)
    first = math.sqrt(l2 ** 2 / (n * sigma ** 2) + t * dim / 2.0)
    second = l2 / (math.sqrt(n) * sigma) + t * l1
    return min(first, second) ** 2 / 2.0


def _cks20(rho: float, delta: float) -> float:
    """min over α > 1 of αρ + (ln(1/δ) + (α−1)ln(1−1/α) − ln α)/(α−1), on a fine grid of ln(α−1)."""
    alpha = 1.0 + np.exp(np.linspace(-12.0, 14.0, 200_001))
    values = alpha * rho + (math.log(1.0 / delta) + (alpha - 1.0) * np.log1p(-1.0 / alpha) - np.log(alpha)) / (
        alpha - 1.0)
    return max(0.0, float(values.min()))


def _rho_for(target: float, delta: float) -> float:
    """The largest ρ whose CKS20 ε is ≤ ``target`` (bisection on ln ρ)."""
    low, high = 1e-14, 10.0
    for _ in range(80):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if _cks20(middle, delta) <= target else (low, middle)
    return low


def _smallest_share(scale: float, per_round: float, n_min: int, slack: float, nnz: int, dim: int) -> float:
    """The smallest σ_share with ρ_shared + 1/(2σ_l²) ≤ ``per_round`` (bisection on ln σ)."""
    l2 = scale + slack
    l1 = min(l2 ** 2, math.sqrt(nnz) * l2)

    def rho(sigma: float) -> float:
        return _shared_rho(sigma, n_min, l2, l1, dim) + (sigma * math.sqrt(n_min) / scale) ** -2 / 2.0

    low, high = 0.5, 0.5
    while rho(high) > per_round:
        high *= 2.0
    for _ in range(100):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if rho(middle) > per_round else (low, middle)
    return high


def _wrap(scale: float, sigma: float, n_clients: int, dim: int, bits: int) -> float:
    reach = n_clients * rd.RECORDS_PER_CLIENT * (scale + 1 + NEGATIVES)
    room = 2.0 ** (bits - 1) - reach
    return 1.0 if room <= 0 else min(1.0, 2 * dim * math.exp(-room ** 2 / (2 * n_clients * sigma ** 2)))


def _layout_by_hand(model: Recommender, negatives: int) -> tuple[float, int, int]:
    """(rounding slack, nnz, D) from the model's parameter shapes."""
    tables, dense = [], []
    for n, p in global_state(model).items():
        (tables if n in model.item_table_names else dense).append(p)
    widths = [p[0].numel() for p in tables]
    slack = (1 + negatives) * sum(math.sqrt(w) for w in widths) + sum(math.sqrt(p.numel()) for p in dense)
    nnz = (1 + negatives) * sum(widths) + sum(p.numel() for p in dense)
    return slack, nnz, sum(p.numel() for p in global_state(model).values())


@pytest.mark.parametrize("name,n_clients,n_min,target,rounds,bits,halved", [
    ("mf", 5, 5, 2.0, 10, 32, False),
    ("neumf", 8, 3, 0.5, 50, 34, False),
    ("gmf", 2, 1, 8.0, 3, 30, False),
    ("mf", 1, 1, 0.05, 1000, 40, True),  # so much noise that the wrap-around bound needs a smaller scale
    ("gmf", 3, 2, 0.2, 3000, 34, False),
])
def test_the_plan_spends_its_budget_by_the_stated_formulas(name: str, n_clients: int, n_min: int, target: float,
                                                            rounds: int, bits: int, halved: bool) -> None:
    model, shared, _ = _federation(name, 1)
    delta, clip = 1e-5, 0.7
    layout = rd.layout_of(model, shared, NEGATIVES)
    kwargs = dict(target_epsilon=target, delta=delta, rounds=rounds, n_clients=n_clients, n_min=n_min, clip=clip,
                  layout=layout, bits=bits, wrap_target=1e-9)
    # evaluations that take about a third of the budget's ρ (the classic bound's, a little under CKS20's)
    rho_budget = (math.sqrt(target + math.log(1 / delta)) - math.sqrt(math.log(1 / delta))) ** 2
    for eval_sigma, evaluations in ((0.0, 0), (math.sqrt(4 / (2 * rho_budget / 3)), 4)):
        plan = rd.plan_records(**kwargs, eval_noise_multiplier=eval_sigma, eval_releases=evaluations)
        p = plan.parameters()
        slack, nnz, dim = _layout_by_hand(model, NEGATIVES)
        assert p["rounding_slack"] == pytest.approx(slack, rel=1e-12)
        assert (p["nnz"], p["dim"], p["n_min"], p["n_clients"], p["rounds"], p["bits"]) == (
            nnz, dim, n_min, n_clients, rounds, bits)
        assert p["clip"] == clip and p["scale"] == pytest.approx(clip / p["gamma"], rel=1e-12)
        # the scale is the first one tried, 2^(bits−2)/(n·RECORDS_PER_CLIENT), halved a whole number of times
        halvings = math.log2(2.0 ** (bits - 2) / (n_clients * rd.RECORDS_PER_CLIENT) / p["scale"])
        assert halvings >= 0 and halvings == pytest.approx(round(halvings), abs=1e-9)
        assert p["scale"] * rd.MAX_ROUNDING_INFLATION >= slack
        sigma, scale = p["sigma_share"], p["scale"]
        assert sigma >= 0.5
        local_multiplier = math.sqrt(n_min) * sigma / scale
        assert p["local_noise_multiplier"] == pytest.approx(local_multiplier, rel=1e-12)
        l2 = scale + slack
        l1 = min(l2 ** 2, math.sqrt(nnz) * l2)
        round_rho = _shared_rho(sigma, n_min, l2, l1, dim) + 1.0 / (2.0 * local_multiplier ** 2)
        eval_rho = evaluations / (2.0 * eval_sigma ** 2) if evaluations else 0.0
        epsilon = _cks20(rounds * round_rho + eval_rho, delta)
        assert epsilon <= target * (1 + 1e-6)
        assert epsilon >= target * (1 - 1e-4)  # sized to spend the budget, not far under it
        assert plan.epsilon(rounds, evaluations) == pytest.approx(epsilon, rel=1e-6)
        # the wrap-around bound, recomputed: met, and the one the plan reports
        wrap = _wrap(scale, sigma, n_clients, dim, bits)
        assert plan.wrap_probability == pytest.approx(wrap, rel=1e-9, abs=1e-300) and wrap <= 1e-9
        # the largest such scale: twice it, with the σ_share it would need, breaks the bound
        if halvings > 0.5:
            per_round = (_rho_for(target, delta) - eval_rho) / rounds
            sigma_twice = _smallest_share(2 * scale, per_round, n_min, slack, nnz, dim)
            assert sigma_twice == pytest.approx(2 * sigma, rel=0.05)
            assert _wrap(2 * scale, sigma_twice, n_clients, dim, bits) > 1e-9
        assert halvings > 0.5 or not halved
        if evaluations:  # the evaluations took their share: training alone is under the target
            assert _cks20(rounds * round_rho, delta) < target * 0.999


def test_the_plans_sensitivity_is_the_stated_bound() -> None:
    layout = rd.Layout(row_widths=(1, 4), dense_sizes=(9,), negatives=2, dim=5 * 20 + 9)
    assert layout.rounding_slack == pytest.approx(3 * (1 + 2) + 3)
    assert layout.nnz == 3 * 5 + 9
    plan = _plan(layout, clip=2.0, scale=100.0, share_std=10.0, n_clients=4)
    assert plan.gamma == pytest.approx(0.02)
    assert plan.bound.l2 == pytest.approx(112.0)
    assert plan.bound.l1 == pytest.approx(min(112.0 ** 2, math.sqrt(24) * 112.0))
    assert plan.noise_multiplier == pytest.approx(2 * 10.0 / 100.0)
    assert plan.local_noise_std == pytest.approx(2 * 10.0 / 100.0 * 2.0)
    # B ≥ the slack ≥ √nnz (Cauchy–Schwarz), so √nnz·B is the smaller even for a tiny scale
    small = _plan(layout, clip=1.0, scale=1.0, share_std=10.0, n_clients=4)
    assert small.bound.l1 == pytest.approx(math.sqrt(24) * 13.0)


# ---- rounding and one record's sensitivity -------------------------------------------------------


def test_randomized_rounding_is_unbiased_and_lands_on_a_neighbour() -> None:
    values = torch.tensor([0.3, -1.7, 2.5, 5.0, -0.01, 123.999, -3.0], dtype=torch.float64)
    draws = 20_000
    out = rd.randomized_round(values.repeat(draws, 1), SecureRandom(KEY))
    assert out.dtype == torch.int64 and out.shape == (draws, len(values))
    floor, ceil = torch.floor(values).long(), torch.ceil(values).long()
    assert bool(((out == floor) | (out == ceil)).all())
    fraction = (values - torch.floor(values)).numpy()
    standard_error = np.sqrt(fraction * (1 - fraction) / draws)
    mean = out.double().mean(dim=0).numpy()
    assert np.all(np.abs(mean - values.numpy()) <= 5 * standard_error + 1e-12), (mean, values)
    # both neighbours are reached where the fraction is not tiny
    assert bool((out[:, 0] == 1).any()) and bool((out[:, 0] == 0).any())
    # a float32 input is rounded the same way (computed in float64)
    again = rd.randomized_round(torch.tensor([[2.25, -0.75]], dtype=torch.float32).repeat(4000, 1), SecureRandom(KEY))
    assert again.double().mean(dim=0).numpy() == pytest.approx([2.25, -0.75], abs=0.05)


@pytest.mark.parametrize("scale", [1000.0, 6.0])
@pytest.mark.parametrize("name", ["mf", "neumf"])
def test_one_records_integer_vector_is_within_the_plans_bound(name: str, scale: float,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A round of one client with one record and no noise: the modular sum is that record's
    rounded vector ``q_r``; over many draws ``‖q_r‖₂ ≤ B`` and ``‖q_r‖₁ ≤ min(B², √nnz·B)``,
    repeated items included (a record clipped by the naive norm would leave ``C/γ``)."""
    model, shared, local = _federation(name, 1)
    layout = rd.layout_of(model, shared, NEGATIVES)
    clip = 0.02  # below every record's norm: each is clipped to C, ‖x‖ = C/γ in grid units
    plan = _plan(layout, clip=clip, scale=scale, share_std=1.0, n_clients=1)
    _no_discrete_noise(monkeypatch)
    largest = 0.0
    for items in ([3, 8, 8, 8], [5, 5, 7, 9], [6, 6, 6, 6], [0, 1, 2, 19]):
        _fixed_examples(monkeypatch, ExampleChunk(torch.tensor([0]), torch.tensor([items])))
        rng = SecureRandom(KEY)
        for _ in range(25):
            out = rd.record_round(model, plan, shared, local, [np.array([items[0]])], "bce", 0.1, rng)
            q = out.modular_sum.astype(np.float64)
            assert np.linalg.norm(q) <= plan.bound.l2
            assert np.abs(q).sum() <= plan.bound.l1
            largest = max(largest, float(np.linalg.norm(q)))
    # not vacuous: the clipped records reach the clip's size on the grid
    assert largest >= scale - layout.rounding_slack


# ---- a round ------------------------------------------------------------------------------------

RECORDS = [np.array([5, 2]), np.array([7]), np.array([], dtype=np.int64), np.array([4, 4, 11, 0])]
CHUNK = ExampleChunk(torch.tensor([0, 0, 1, 3, 3, 3, 3]),
                     torch.tensor([[5, 5, 9, 13], [2, 8, 8, 1], [7, 3, 17, 7], [4, 0, 4, 12], [4, 6, 14, 19],
                                   [11, 11, 11, 11], [0, 16, 15, 10]]))


@pytest.mark.parametrize("loss", ["bce", "bpr"])
@pytest.mark.parametrize("name", ["mf", "gmf", "mlp", "neumf"])
def test_a_round_sums_the_clipped_records_and_steps_each_local_part(name: str, loss: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    n_clients, clip, scale, lr = len(RECORDS), 0.5, 1e4, 0.3
    model, shared, local = _federation(name, n_clients)
    layout = rd.layout_of(model, shared, NEGATIVES)
    share_std = 0.1 * scale / (math.sqrt(n_clients) * clip)  # a local noise std of 0.1
    plan = _plan(layout, clip=clip, scale=scale, share_std=share_std, n_clients=n_clients)
    assert plan.local_noise_std == pytest.approx(0.1)
    _no_discrete_noise(monkeypatch)
    _fixed_examples(monkeypatch, CHUNK, RECORDS)
    out = rd.record_round(model, plan, shared, local, RECORDS, loss, lr, _UnitNormals(KEY), chunk_size=3)
    assert out.examples == len(CHUNK.owners)
    expected_shared, expected_local = _clipped_sums(name, shared, local, CHUNK, loss, clip)
    lookups = _lookups(shared, model, CHUNK)
    assert sorted(out.shared_sum) == sorted(shared)
    for n, value in out.shared_sum.items():
        assert value.shape == shared[n].shape
        # each rounded entry is off by < 1 grid step γ
        assert np.all(np.abs(value - expected_shared[n]) <= plan.gamma * lookups[n] + 1e-6), n
    # not vacuous: the sum is far larger than the rounding
    total = np.sqrt(sum(float((v ** 2).sum()) for v in expected_shared.values()))
    assert total > 1000 * plan.gamma * len(CHUNK.owners)
    # the server's view is the integer sum, decoded by γ in the names' order
    flat = np.concatenate([out.shared_sum[n].reshape(-1) for n in sorted(shared)])
    np.testing.assert_allclose(flat, out.modular_sum * plan.gamma, rtol=0, atol=0)
    # local: θ − lr·(Σ clipped local gradients + noise), the noise σ_l·C times the unit draws
    for n, value in out.local.items():
        assert value.dtype == torch.float32 and value.shape == local[n].shape
        expected = local[n].double() - lr * (expected_local[n] + plan.local_noise_std)
        torch.testing.assert_close(value.double(), expected, rtol=0, atol=2e-6)
    # the client without records moved by the noise alone
    for n, value in out.local.items():
        torch.testing.assert_close(value[2].double(), local[n][2].double() - lr * 0.1, rtol=0, atol=1e-6)


def test_the_noise_is_there_at_its_planned_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two keys, same examples: the shared sums differ by the difference of two sums of ``n``
    discrete Gaussians (std γ·√(2n)·σ_share per coordinate), the local parts by two
    Gaussians (std lr·√2·σ_l·C); without the discrete noise only the rounding differs."""
    n_clients, lr = len(RECORDS), 0.3
    model, shared, local = _federation("neumf", n_clients)
    layout = rd.layout_of(model, shared, NEGATIVES)
    plan = rd.plan_records(target_epsilon=4.0, delta=1e-5, rounds=5, n_clients=n_clients, n_min=n_clients, clip=0.5,
                           layout=layout, bits=34, wrap_target=1e-9)
    _fixed_examples(monkeypatch, CHUNK, RECORDS)

    def difference() -> tuple[np.ndarray, np.ndarray]:
        a, b = (rd.record_round(model, plan, shared, local, RECORDS, "bce", lr, SecureRandom(key))
                for key in (b"a" * 32, b"b" * 32))
        shared_gap = np.concatenate([(a.shared_sum[n] - b.shared_sum[n]).reshape(-1) for n in sorted(shared)])
        local_gap = torch.cat([(a.local[n] - b.local[n]).reshape(-1) for n in local]).double().numpy()
        return shared_gap, local_gap

    shared_gap, local_gap = difference()
    assert len(shared_gap) == layout.dim > 200
    expected = plan.gamma * math.sqrt(2 * n_clients) * plan.share_std
    assert 0.75 < float(np.sqrt(np.mean(shared_gap ** 2))) / expected < 1.25
    expected_local = lr * math.sqrt(2) * plan.local_noise_std
    assert expected_local > 1e-3
    assert 0.6 < float(np.sqrt(np.mean(local_gap ** 2))) / expected_local < 1.4
    # without the discrete Gaussian: at most the two roundings apart
    _no_discrete_noise(monkeypatch)
    quiet_gap, _ = difference()
    lookups = _lookups(shared, model, CHUNK)
    bound = np.concatenate([2 * plan.gamma * lookups[n].reshape(-1) for n in sorted(shared)])
    assert np.all(np.abs(quiet_gap) <= bound + 1e-9)
    assert float(np.abs(quiet_gap).max()) < 1e-3 * expected


def test_examples_of_pairs_each_record_with_uniform_negatives() -> None:
    records = [np.array([3, 4]), np.array([], dtype=np.int64), np.array([19])]
    chunk = rd.examples_of(records, N_ITEMS, 5, SecureRandom(KEY))
    assert chunk.owners.tolist() == [0, 0, 2]
    assert chunk.items.shape == (3, 6) and chunk.items[:, 0].tolist() == [3, 4, 19]
    many = rd.examples_of([np.zeros(4000, dtype=np.int64)], N_ITEMS, 3, SecureRandom(KEY)).items[:, 1:]
    assert int(many.min()) == 0 and int(many.max()) == N_ITEMS - 1
    counts = np.bincount(many.reshape(-1).numpy(), minlength=N_ITEMS)
    assert np.all(np.abs(counts - 600) < 5 * math.sqrt(600))


# ---- refusals and the wrap-around bound --------------------------------------------------------


def test_too_few_bits_are_refused_naming_the_bits_that_would_do() -> None:
    model, shared, _ = _federation("mf", 1)
    layout = rd.layout_of(model, shared, NEGATIVES)
    kwargs = dict(target_epsilon=1.0, delta=1e-5, rounds=10, n_clients=5, n_min=5, clip=1.0, layout=layout,
                  wrap_target=1e-9)
    with pytest.raises(ValueError, match=r"ddg-bits ≥ \d+") as refused:
        rd.plan_records(bits=16, **kwargs)
    needed = int(re.search(r"ddg-bits ≥ (\d+)", str(refused.value)).group(1))
    assert needed > 16
    plan = rd.plan_records(bits=needed, **kwargs)  # the advice is enough
    assert plan.wrap_probability <= 1e-9
    with pytest.raises(ValueError, match="give --epsilon > 0"):
        rd.plan_records(bits=32, **{**kwargs, "target_epsilon": 0.0})
    with pytest.raises(ValueError, match="n_min"):
        rd.plan_records(bits=32, **{**kwargs, "n_min": 6})
    with pytest.raises(ValueError, match="evaluation releases"):
        rd.plan_records(bits=32, **kwargs, eval_noise_multiplier=0.1, eval_releases=10)


def test_a_round_refuses_a_client_over_the_public_bound_and_a_wrong_count(monkeypatch: pytest.MonkeyPatch) -> None:
    model, shared, local = _federation("mf", 2)
    layout = rd.layout_of(model, shared, NEGATIVES)
    plan = _plan(layout, clip=1.0, scale=100.0, share_std=5.0, n_clients=2)
    monkeypatch.setattr(rd, "RECORDS_PER_CLIENT", 2)
    records = [np.array([1, 2]), np.array([3, 4, 5])]
    with pytest.raises(ValueError, match=r"client 1 holds 3 records.*RECORDS_PER_CLIENT = 2"):
        rd.record_round(model, plan, shared, local, records, "bce", 0.1, SecureRandom(KEY))
    with pytest.raises(ValueError, match="the plan is for 2 clients a round, the round has 3"):
        rd.record_round(model, plan, shared, local, [np.array([1])] * 3, "bce", 0.1, SecureRandom(KEY))
    out = rd.record_round(model, plan, shared, local, [np.array([1, 2]), np.array([3])], "bce", 0.1,
                          SecureRandom(KEY))
    assert out.examples == 3


def test_the_wrap_probability_is_one_past_the_modulus_and_falls_with_more_bits() -> None:
    layout = rd.Layout(row_widths=(4,), dense_sizes=(5,), negatives=NEGATIVES, dim=85)
    scale, share_std, n_clients = 64.0, 1e6, 10
    reach = n_clients * rd.RECORDS_PER_CLIENT * (scale + 1 + NEGATIVES)
    at_reach = math.floor(math.log2(reach)) + 1  # 2^(bits−1) ≤ reach
    for bits in range(8, at_reach + 1):
        assert rd.wrap_probability(scale, share_std, n_clients, layout, bits) == 1.0
    values = [rd.wrap_probability(scale, share_std, n_clients, layout, bits) for bits in range(at_reach, at_reach + 8)]
    assert all(b <= a for a, b in zip(values, values[1:]))
    assert any(0 < v < 1 for v in values) and values[-1] < 1e-12
    # strictly falling where it is neither 1 nor 0
    inner = [v for v in values if 0 < v < 1]
    assert all(b < a for a, b in zip(inner, inner[1:]))
    # the stated bound where it is neither 0 nor 1
    bits = at_reach + values.index(inner[0])
    room = 2.0 ** (bits - 1) - reach
    assert rd.wrap_probability(scale, share_std, n_clients, layout, bits) == pytest.approx(
        2 * 85 * math.exp(-room ** 2 / (2 * n_clients * share_std ** 2)), rel=1e-9)


def test_a_plan_never_asks_the_sampler_for_more_than_it_can_draw() -> None:
    """With 48 bits and one client a round the first grid's σ_share exceeds the sampler's
    2^40: the plan coarsens the grid until a round can run (it used to return a plan every
    round of which failed), and a round of it runs."""
    from fedrec.core.privacy.discrete_gaussian import MAX_SIGMA

    model = build_model("mf", 1, 20, 4)
    shared = {name: value.detach().numpy().copy() for name, value in global_state(model).items()}
    plan = rd.plan_records(target_epsilon=0.5, delta=1e-5, rounds=100, n_clients=1, n_min=1, clip=1.0,
                           layout=rd.layout_of(model, shared, 3), bits=48, wrap_target=1e-9)
    assert plan.share_std <= MAX_SIGMA and plan.epsilon(100) <= 0.5 * (1 + 1e-9)
    local = {name: value.detach()[None].clone() for name, value in local_state(model).items()}
    out = rd.record_round(model, plan, shared, local, [np.array([1, 2, 3])], "bce", 0.1, SecureRandom(b"k" * 32))
    assert set(out.shared_sum) == set(shared)
    with pytest.raises(ValueError, match="rounds must be a positive integer"):
        rd.plan_records(target_epsilon=0.5, delta=1e-5, rounds=0, n_clients=1, n_min=1, clip=1.0,
                        layout=rd.layout_of(model, shared, 3), bits=48, wrap_target=1e-9)
