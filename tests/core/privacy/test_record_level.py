"""Record-level DP local training (fedrec/core/privacy/record_level.py).

Reference tests check Opacus' clipped, noised step against a per-example autograd
loop; the rest check what the privacy argument rests on: the schedule (q, steps,
divisor) is public and the same for every user, the user vector moves only through the
clipped and noised gradient, noise of the stated size reaches every row, it comes from
the SecureRandom, and the steps returned are the steps taken.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from fedrec.core.data.split import NO_ITEM, UserData
from fedrec.core.models.base import global_state, load_parameters
from fedrec.core.models.registry import (
    FEATURE_MODELS,
    MODELS,
    build_model,
    needs_item_features,
)
from fedrec.core.privacy import record_level, secure_noise_optimizers
from fedrec.core.privacy.accounting import epsilon
from fedrec.core.privacy.record_level import (
    DEFAULT_GRAD_SAMPLE_MODE,
    GRAD_SAMPLE_MODES,
    PrivatePhase,
    RecordDP,
    lookup_norm_sample,
    record_examples,
    record_losses,
    train_user_private,
)
from fedrec.core.privacy.record_steps import (
    sample_rate,
    steps_per_epoch,
    steps_per_round,
    user_steps_per_round,
)
from fedrec.core.privacy.secure_random import SecureRandom
from fedrec.core.training.implicit import TrainingConfig, batch_loss
from fedrec.core.training.local_round import new_local_parameters, train_user

N_ITEMS = 30
DIM = 8

pytestmark = [
    # Opacus hooks embedding tables, whose inputs are indices: torch notes it on every backward
    pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning"),
    # Opacus' functorch path asks for autocast to int64 for the same reason
    pytest.mark.filterwarnings("ignore:In CPU autocast:UserWarning"),
]


def _features(model_name: str, n_items: int) -> np.ndarray | None:
    """Fixed public features in [0, 1] for a feature model (3 columns); None for the others."""
    if not needs_item_features(model_name):
        return None
    return np.random.default_rng(n_items).random((n_items, 3)).astype(np.float32)


def _build(model_name: str, n_items: int, dim: int, seed: int = 0):
    return build_model(model_name, 1, n_items, dim, seed=seed, item_features=_features(model_name, n_items))


def _rng(seed: int = 0) -> SecureRandom:
    """A keyed (reproducible) SecureRandom: tests only."""
    return SecureRandom(key=seed.to_bytes(32, "little"))


def _dp(sigma: float, clip: float = 1.0, accountant: str = "rdp", mode: str = DEFAULT_GRAD_SAMPLE_MODE,
        q: float = 1.0, divisor: float = 4.0) -> RecordDP:
    return RecordDP(sigma, clip, accountant, mode, sample_rate=q, divisor=divisor)


def _user(n_records: int, n_items: int = N_ITEMS) -> UserData:
    assert n_records <= n_items
    items = np.arange(n_records, dtype=np.int64) * 7 % n_items  # distinct: 7 is prime to 30, 200 and 250
    return UserData(0, n_items, items, NO_ITEM, NO_ITEM, None)


def _start(model_name: str, n_items: int = N_ITEMS, dim: int = DIM) -> tuple[dict, dict]:
    model = _build(model_name, n_items, dim, seed=3)
    global_arrays = {k: v.detach().numpy().copy() for k, v in global_state(model).items()}
    return global_arrays, new_local_parameters(model_name, n_items, dim, seed=3, user=0,
                                               item_features=_features(model_name, n_items))


def _sgd(lr: float, batch_size: int, loss: str = "bce", negatives: int = 2) -> TrainingConfig:
    return TrainingConfig(lr=lr, batch_size=batch_size, negatives=negatives, loss=loss, optimizer="sgd")


def _norm(arrays: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in arrays.values())))


def _diff(new: dict[str, np.ndarray], old: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: new[k] - old[k] for k in old}


# ---------------------------------------------------------------- settings and rates


def test_settings_that_make_no_sense_fail() -> None:
    for bad in (dict(noise_multiplier=-1.0), dict(clip=0.0), dict(clip=float("inf")),
                dict(accountant="gdp"), dict(grad_sample_mode="ew"), dict(sample_rate=0.0),
                dict(sample_rate=1.5), dict(sample_rate=float("nan")), dict(divisor=0.0),
                dict(divisor=float("inf"))):
        with pytest.raises(ValueError):
            RecordDP(**{"noise_multiplier": 1.0, "clip": 1.0, "accountant": "rdp", "sample_rate": 0.1,
                        "divisor": 16, **bad})
    assert RecordDP(1.0, 1.0, "rdp", sample_rate=0.1, divisor=16).grad_sample_mode == DEFAULT_GRAD_SAMPLE_MODE
    with pytest.raises(TypeError):  # the schedule is never implicit
        RecordDP(1.0, 1.0, "rdp")  # type: ignore[call-arg]


def test_the_schedule_is_public_constants() -> None:
    assert sample_rate(0.1) == 0.1 and sample_rate(1) == 1.0
    for bad in (0.0, -0.1, 1.01, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            sample_rate(bad)
    assert steps_per_epoch(0.1) == 10 and steps_per_epoch(1.0) == 1 and steps_per_epoch(0.05) == 20
    assert steps_per_epoch(1 / 3) == 3 and steps_per_epoch(0.01) == 100  # 1/q an integer up to rounding
    assert steps_per_epoch(0.3) == 4 and steps_per_epoch(0.07) == 15  # ⌈1/q⌉ otherwise
    assert steps_per_round(0.25, local_epochs=2, user_epochs=1) == 12
    assert steps_per_round(0.1, 0, 0) == 0
    with pytest.raises(ValueError):
        steps_per_round(0.1, -1, 1)
    assert user_steps_per_round(0, 0.1, 2, 1) == 0 and user_steps_per_round(1, 0.1, 2, 1) == 30
    assert inspect.signature(sample_rate).parameters.keys() == {"config_rate"}
    assert list(inspect.signature(steps_per_round).parameters) == ["rate", "local_epochs", "user_epochs"]


@pytest.mark.parametrize("n_records,q", [(1, 0.5), (10, 0.25), (64, 0.1), (200, 0.1), (7, 1.0)])
def test_batches_are_poisson_samples_on_the_public_schedule(n_records: int, q: float) -> None:
    model = build_model("mf", 1, 300, 4)
    records = np.arange(n_records) * 7 % 300
    dp = _dp(1.0, q=q, divisor=16)
    with PrivatePhase(model, list(model.parameters()), records, _sgd(0.1, 16), dp, _rng()) as phase:
        assert phase.history == []
        assert phase.sample_rate == q and phase.divisor == 16
        # the noised sum is divided by the public constant b, whatever n
        assert phase.expected_batch_size == 16
        sizes = []
        for _ in range(400 // steps_per_epoch(q)):
            epoch = list(phase.batches())
            assert len(epoch) == steps_per_epoch(q)
            for batch in epoch:
                assert set(batch.tolist()) <= set(records.tolist())
                assert len(set(batch.tolist())) == len(batch)  # without replacement within a step
                sizes.append(len(batch))
    # |B| ~ Binomial(n, q): mean n·q, std √(n·q(1-q)/steps) of the mean; 5 standard errors
    steps = len(sizes)
    assert abs(np.mean(sizes) - n_records * q) <= 5 * np.sqrt(n_records * q * (1 - q) / steps) + 1e-9


def test_the_schedule_does_not_depend_on_the_record_count() -> None:
    """Two users, 20 and 200 records: the same q, steps and divisor (nothing reveals n)."""
    n_items = 250
    config = _sgd(0.05, batch_size=16)
    dp = _dp(1.1, q=0.1, divisor=config.batch_size)
    global_arrays, local_arrays = _start("mf", n_items=n_items)
    histories, divisors, epochs = [], [], []
    for n_records in (20, 200):
        _, history = train_user_private("mf", DIM, global_arrays, local_arrays, _user(n_records, n_items), config,
                                        local_epochs=2, user_epochs=1, rng=_rng(n_records), dp=dp)
        histories.append(history)
        model = build_model("mf", 1, n_items, DIM)
        with PrivatePhase(model, list(model.parameters()), _user(n_records, n_items).train_items, config, dp,
                          _rng()) as phase:
            divisors.append(phase.expected_batch_size)
            epochs.append(sum(1 for _ in phase.batches()))
    assert histories[0] == histories[1]
    assert sum(s for _, _, s in histories[0]) == steps_per_round(0.1, 2, 1) == 30
    assert all(q == 0.1 for h in histories for _, q, _ in h)
    assert divisors == [16, 16] and epochs == [10, 10]


def test_no_torch_or_numpy_generator_draws_the_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opacus' noise function (torch.normal with a torch generator) is never called, and the
    module has no torch generator or seed to replay."""
    import opacus.optimizers.optimizer as dp_optimizer
    import opacus.optimizers.optimizer_fast_gradient_clipping as ghost_optimizer

    def refuse(*args, **kwargs):
        raise AssertionError("noise drawn by Opacus' torch generator")

    monkeypatch.setattr(dp_optimizer, "_generate_noise", refuse)
    monkeypatch.setattr(ghost_optimizer, "_generate_noise", refuse)
    global_arrays, local_arrays = _start("mf")
    for mode in GRAD_SAMPLE_MODES:
        result, _ = train_user_private("mf", DIM, global_arrays, local_arrays, _user(6), _sgd(0.1, 4), 1, 1,
                                       _rng(), _dp(1.0, mode=mode, q=0.5))
        assert all(np.count_nonzero(v) == v.size for v in result.update.values())
    for module in (record_level, secure_noise_optimizers):
        source = inspect.getsource(module)
        assert "manual_seed" not in source and "Generator" not in source.replace("SecureRandom", "")
    with pytest.raises(TypeError):  # a numpy generator is refused
        train_user_private("mf", DIM, global_arrays, local_arrays, _user(6), _sgd(0.1, 4), 1, 1,
                           np.random.default_rng(0), _dp(1.0))  # type: ignore[arg-type]


def test_record_losses_average_to_the_non_private_batch_loss() -> None:
    model = build_model("neumf", 1, N_ITEMS, DIM)
    positives = torch.tensor([1, 4, 9])
    negatives = torch.tensor([[2, 3], [5, 5], [0, 7]])
    users, items = record_examples(positives, negatives)
    for loss in ("bce", "bpr"):
        private = record_losses(model(users, items), loss).mean()
        plain = batch_loss(model, torch.zeros(3, dtype=torch.long), positives, negatives, loss)
        assert private.item() == pytest.approx(plain.item(), rel=1e-6)


# ---------------------------------------------------------------- (e) reference: per-example loop


def _loop_clipped_sum(model, trainable, positives, negatives, loss: str, clip: float):
    """Σ_i clip(∇ℓ_i) over ``trainable`` jointly, and the per-example norms, by autograd."""
    users, items = record_examples(positives, negatives)
    total = [torch.zeros_like(p) for p in trainable]
    norms = []
    for i in range(len(positives)):
        ell = record_losses(model(users[i:i + 1], items[i:i + 1]), loss)[0]
        grads = torch.autograd.grad(ell, trainable)
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        norms.append(float(norm))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        total = [t + factor * g for t, g in zip(total, grads)]
    return total, np.array(norms)


@pytest.mark.parametrize("mode", GRAD_SAMPLE_MODES)
@pytest.mark.parametrize("model_name,part", [(name, "all") for name in sorted([*MODELS, *FEATURE_MODELS])]
                         + [("neumf", "local")])
def test_clipped_step_matches_a_per_example_loop(mode: str, model_name: str, part: str) -> None:
    """σ = 0, SGD with lr 1: the step is exactly −Σ_i clip(g_i) / b, for every mode
    (feature models: ``W``'s per-example gradient sums over the example's 1 + k feature rows)."""
    model = _build(model_name, 12, 4, seed=1)
    reference = _build(model_name, 12, 4, seed=1)
    # repeated items inside one example (5 twice, 3 as positive of one, negative of another)
    positives = torch.tensor([3, 5, 8, 1, 10])
    negatives = torch.tensor([[5, 5], [3, 0], [2, 9], [7, 7], [11, 3]])
    names = model.local_parameter_names if part == "local" else tuple(n for n, _ in model.named_parameters())
    params = dict(reference.named_parameters())
    _, norms = _loop_clipped_sum(reference, [params[n] for n in names], positives, negatives, "bce", 1.0)
    clip = float(np.median(norms))  # some examples clipped, some not
    expected, _ = _loop_clipped_sum(reference, [params[n] for n in names], positives, negatives, "bce", clip)

    trainable = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with PrivatePhase(model, [trainable[n] for n in names], np.arange(5), _sgd(1.0, 5),
                      _dp(0.0, clip, mode=mode, divisor=5), _rng()) as phase:
        assert phase.expected_batch_size == 5
        phase.step(positives, negatives)
    for name, p in model.named_parameters():
        moved = before[name] - p.detach()
        if name in names:
            want = expected[names.index(name)] / 5
            torch.testing.assert_close(moved, want, rtol=1e-4, atol=1e-6)
        else:
            assert torch.equal(moved, torch.zeros_like(moved)), f"{name} is frozen in this phase"


@pytest.mark.parametrize("mode", ["hooks", "functorch"])
def test_per_sample_gradients_match_a_per_example_loop(mode: str) -> None:
    """Opacus' per-example gradients of every table, for 2-D indices with repeats."""
    model = build_model("neumf", 1, 12, 4, seed=2)
    reference = build_model("neumf", 1, 12, 4, seed=2)
    positives = torch.tensor([3, 5, 8])
    negatives = torch.tensor([[5, 5], [3, 0], [2, 2]])
    users, items = record_examples(positives, negatives)
    with PrivatePhase(model, list(model.parameters()), np.arange(3), _sgd(1.0, 3),
                      _dp(0.0, mode=mode, divisor=3), _rng()) as phase:
        per_record = record_losses(phase.module(users, items), "bce")
        (per_record.sum() / len(per_record)).backward()
        got = {n: p.grad_sample.clone() for n, p in model.named_parameters()}
    params = dict(reference.named_parameters())
    for i in range(3):
        ell = record_losses(reference(users[i:i + 1], items[i:i + 1]), "bce")[0]
        grads = torch.autograd.grad(ell, list(params.values()))
        for name, g in zip(params, grads):
            torch.testing.assert_close(got[name][i], g, rtol=1e-4, atol=1e-6)


def test_lookup_norms_match_dense_per_example_gradients() -> None:
    """fedrec's ghost norm sampler for tables equals ‖per-example dense gradient‖."""
    table = torch.nn.Embedding(9, 3, padding_idx=8)
    generator = torch.Generator().manual_seed(0)
    rows = torch.tensor([[1, 1, 4], [2, 8, 2], [0, 5, 7], [3, 3, 3]])
    grads = torch.randn(4, 3, 3, generator=generator)
    dense = torch.zeros(4, 9, 3)
    for i in range(4):
        for t in range(3):
            if rows[i, t] != 8:
                dense[i, rows[i, t]] += grads[i, t]
    norms = lookup_norm_sample(table, [rows], grads)[table.weight]
    torch.testing.assert_close(norms, dense.reshape(4, -1).norm(dim=1))


# ---------------------------------------------------------------- (a), (b) the user vector


def test_user_vector_moves_only_through_the_clipped_gradient() -> None:
    """σ = 0 and a tiny C: every step moves all parameters jointly by ≤ lr·|B|·C/b = lr·C
    (q = 1 and b = n = 4 here)."""
    user = _user(4)
    global_arrays, local_arrays = _start("mf")
    config, clip = _sgd(0.5, batch_size=4), 1e-5
    result, steps = train_user_private("mf", DIM, global_arrays, local_arrays, user, config,
                                       local_epochs=2, user_epochs=1, rng=_rng(),
                                       dp=_dp(0.0, clip, q=1.0, divisor=4))
    n_steps = sum(s for _, _, s in steps)
    assert n_steps == 3 and all(q == 1.0 for _, q, _ in steps)
    # float32 rounding: at most half a unit in the last place per coordinate per step
    rounding = n_steps * 0.5 * _norm({k: np.spacing(v) for k, v in {**global_arrays, **local_arrays}.items()})
    bound = config.lr * n_steps * clip + rounding
    user_move = _norm(_diff(result.local, local_arrays))
    assert user_move <= bound
    assert _norm(result.update) <= bound
    assert np.hypot(user_move, _norm(result.update)) <= bound
    assert user_move > 0.1 * config.lr * clip  # it did train

    # the bound means something: the raw gradient of one record is ≥ 1000·C, and the same
    # round without DP moves the user vector by O(lr)
    model = build_model("mf", 1, N_ITEMS, DIM)
    load_parameters(model, {k: torch.from_numpy(v) for k, v in global_arrays.items()}, "global")
    load_parameters(model, {k: torch.from_numpy(v) for k, v in local_arrays.items()}, "local")
    users, items = record_examples(torch.from_numpy(user.train_items[:1]), torch.tensor([[1, 3]]))
    (raw,) = torch.autograd.grad(record_losses(model(users, items), "bce")[0], [model.user_embedding.weight])
    assert raw.norm() >= 1000 * clip
    plain = train_user("mf", DIM, global_arrays, local_arrays, user, config, 2, np.random.default_rng(0),
                       user_epochs=1)
    assert _norm(_diff(plain.local, local_arrays)) > 100 * bound


@pytest.mark.parametrize("mode", ["hooks", "ghost"])  # the two optimiser classes Opacus picks
def test_noise_reaches_the_user_vector(mode: str) -> None:
    """σ ≫ 1: the user vector random-walks with per-coordinate std lr·σ·C·√T/b."""
    sigma, clip, dim, n_steps = 100.0, 1.0, 32, 16
    config = _sgd(0.01, batch_size=8)
    changes = []
    for seed in range(3):
        global_arrays, local_arrays = _start("mf", dim=dim)
        result, steps = train_user_private("mf", dim, global_arrays, local_arrays, _user(4), config,
                                           local_epochs=n_steps, user_epochs=0,
                                           rng=_rng(seed), dp=_dp(sigma, clip, mode=mode, divisor=4))
        assert steps == [(sigma, 1.0, n_steps)]
        changes.append(_diff(result.local, local_arrays)["user_embedding.weight"].ravel())
    expected_std = config.lr * sigma * clip * np.sqrt(n_steps) / 4  # b = 4
    observed_std = float(np.sqrt(np.mean(np.concatenate(changes) ** 2)))
    assert 0.7 < observed_std / expected_std < 1.35


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_noise_on_untouched_rows_has_std_lr_sigma_c_over_b(mode: str) -> None:
    """SGD: a row no example touches moves by ``−lr·z/b`` per step, ``z ~ N(0, σ²C²)``.

    Tolerance: 394 untouched rows × d=16 × 5 steps = 31520 draws. The sample std of
    N Gaussian draws has relative standard error 1/√(2N) ≈ 0.4%; the test allows 2.5%
    (≈ 6 standard errors, a false failure has probability < 1e-8 — and the keyed
    generator makes the run deterministic anyway). The mean must be within 6 standard
    errors of 0 and the excess kurtosis within ±0.15 (its standard error is √(24/N) ≈ 0.03).
    """
    n_items, dim, n_steps = 400, 16, 5
    lr, sigma, clip, divisor = 0.1, 2.0, 0.5, 8
    model = build_model("mf", 1, n_items, dim, seed=0)
    positives = torch.tensor([3, 7])
    negatives = torch.tensor([[11, 13], [17, 19]])
    untouched = np.setdiff1d(np.arange(n_items), [3, 7, 11, 13, 17, 19])
    moves = []
    with PrivatePhase(model, list(model.parameters()), np.arange(10), _sgd(lr, 8),
                      _dp(sigma, clip, mode=mode, q=0.1, divisor=divisor), _rng(7)) as phase:
        for _ in range(n_steps):
            before = model.item_embedding.weight.detach().clone()
            phase.step(positives, negatives)
            moves.append((model.item_embedding.weight.detach() - before).numpy()[untouched])
    draws = np.concatenate(moves).ravel().astype(np.float64)
    expected = lr * sigma * clip / divisor
    assert draws.size == 394 * dim * n_steps
    assert abs(draws.std() / expected - 1) < 0.025
    assert abs(draws.mean()) < 6 * expected / np.sqrt(draws.size)
    kurtosis = np.mean((draws / draws.std()) ** 4) - 3
    assert abs(kurtosis) < 0.15
    # successive steps' noise is independent (lag-1 correlation over the same coordinates)
    stacked = np.stack([m.ravel() for m in moves])
    assert abs(np.corrcoef(stacked[:-1].ravel(), stacked[1:].ravel())[0, 1]) < 0.05


# ---------------------------------------------------------------- (c) dense noise


@pytest.mark.parametrize("mode", GRAD_SAMPLE_MODES)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_noise_lands_on_every_row_of_every_table(mode: str, optimizer: str) -> None:
    n_items = 200
    user = _user(3, n_items)
    global_arrays, local_arrays = _start("neumf", n_items=n_items)
    config = TrainingConfig(lr=0.01, batch_size=4, negatives=2, optimizer=optimizer)
    result, _ = train_user_private("neumf", DIM, global_arrays, local_arrays, user, config, 1, 0,
                                   _rng(), _dp(1.0, mode=mode, q=1.0))
    for name, delta in result.update.items():
        assert np.count_nonzero(delta) == delta.size, f"{name}: rows without noise"

    # control: without noise, rows no example touched do not move (SGD), so the rows
    # above were untouched ones
    if optimizer == "sgd":
        quiet, _ = train_user_private("neumf", DIM, global_arrays, local_arrays, user, config, 1, 0,
                                      _rng(), _dp(0.0, mode=mode, q=1.0))
        untouched = np.flatnonzero(~quiet.update["gmf_item_embedding.weight"].any(axis=1))
        assert len(untouched) > n_items - 3 * (1 + config.negatives) - 1


# ---------------------------------------------------------------- (d) accounting


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_steps_feed_the_accountant_and_epsilon_grows(accountant: str) -> None:
    user = _user(10)
    config = _sgd(0.05, batch_size=4)
    dp = _dp(1.2, accountant=accountant, q=0.25, divisor=config.batch_size)
    global_arrays, local_arrays = _start("gmf")
    history = []
    epsilons = []
    for round_ in range(2):
        result, steps = train_user_private("gmf", DIM, global_arrays, local_arrays, user, config,
                                           local_epochs=2, user_epochs=1,
                                           rng=_rng(round_), dp=dp)
        assert all(sigma == 1.2 and rate == 0.25 for sigma, rate, _ in steps)
        assert sum(s for _, _, s in steps) == steps_per_round(0.25, 2, 1) == 12
        history += steps
        epsilons.append(epsilon(history, 1e-5, accountant))
        global_arrays = {k: global_arrays[k] + result.update[k] for k in global_arrays}
        local_arrays = result.local
    assert 0 < epsilons[0] < epsilons[1] < np.inf


# ---------------------------------------------------------------- (f) empty batches


@pytest.mark.parametrize("mode", GRAD_SAMPLE_MODES)
def test_empty_poisson_batches_are_noise_only_steps(mode: str) -> None:
    config = _sgd(0.1, batch_size=1)  # q = 1/20: a batch is empty with probability ≈ 0.36
    model = build_model("mlp", 1, N_ITEMS, DIM)
    records = np.arange(20)
    with PrivatePhase(model, list(model.parameters()), records, config, _dp(0.0, mode=mode, q=0.05, divisor=1),
                      _rng()) as phase:
        sizes = [len(b) for b in phase.batches()]
        assert 0 in sizes and len(sizes) == 20
        before = [p.detach().clone() for p in model.parameters()]
        assert len(phase.step(torch.zeros(0, dtype=torch.long), torch.zeros(0, 2, dtype=torch.long))) == 0
        assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))  # σ = 0: nothing moves
        assert phase.history == [(0.0, 0.05, 1)]
    with PrivatePhase(model, list(model.parameters()), records, config, _dp(1.0, mode=mode, q=0.05, divisor=1),
                      _rng()) as phase:
        phase.step(torch.zeros(0, dtype=torch.long), torch.zeros(0, 2, dtype=torch.long))
        assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))  # noise only
        assert phase.history == [(1.0, 0.05, 1)]
    global_arrays, local_arrays = _start("mlp")
    result, steps = train_user_private("mlp", DIM, global_arrays, local_arrays, _user(20), config, 1, 1,
                                       _rng(), _dp(1.0, mode=mode, q=0.05, divisor=1))
    # 40 steps, each empty with probability 0.95^20 ≈ 0.36
    assert steps == [(1.0, 0.05, 20), (1.0, 0.05, 20)]
    assert all(np.isfinite(v).all() for v in result.update.values())


def test_a_user_without_records_runs_the_same_noise_only_steps() -> None:
    # removing a user's last record must not change what is released: the same steps run,
    # on empty batches, and the update is pure noise on every entry
    global_arrays, local_arrays = _start("neumf")
    result, steps = train_user_private("neumf", DIM, global_arrays, local_arrays, _user(0), _sgd(0.1, 4),
                                       2, 1, _rng(), _dp(1.0, q=0.1))
    assert steps == [(1.0, 0.1, 10), (1.0, 0.1, 20)] and result.num_examples == 0
    assert all(v.all() for v in result.update.values())  # noise reached every entry


# ---------------------------------------------------------------- (g), (h) every model


@pytest.mark.parametrize("model_name", sorted([*MODELS, *FEATURE_MODELS]))
@pytest.mark.parametrize("loss", ["bce", "bpr"])
def test_every_model_trains_privately_and_ships_only_its_global_part(model_name: str, loss: str) -> None:
    global_arrays, local_arrays = _start(model_name)
    config = TrainingConfig(lr=0.01, batch_size=4, negatives=2, loss=loss, optimizer="adam")
    run = lambda: train_user_private(model_name, DIM, global_arrays, local_arrays, _user(9), config,  # noqa: E731
                                     1, 1, _rng(5), _dp(0.8, q=0.5, divisor=4),
                                     item_features=_features(model_name, N_ITEMS))
    result, steps = run()
    model = _build(model_name, N_ITEMS, DIM)
    assert list(result.update) == list(model.global_parameter_names)
    assert list(result.local) == list(model.local_parameter_names)
    assert all(result.update[k].shape == global_arrays[k].shape for k in global_arrays)
    assert all(np.isfinite(v).all() and v.dtype == np.float32 for v in [*result.update.values(),
                                                                        *result.local.values()])
    assert sum(s for _, _, s in steps) == steps_per_round(0.5, 1, 1) == 4
    assert np.isfinite(result.loss) and result.loss > 0
    assert result.num_examples % (1 + config.negatives) == 0
    assert _norm(_diff(result.local, local_arrays)) > 0
    again, _ = run()  # the same key gives the same round
    assert all(np.array_equal(again.update[k], result.update[k]) for k in result.update)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_round_matches_the_cpu_round_without_noise() -> None:
    from fedrec.core.config.run_config import RunConfig
    from fedrec.core.data.loaders import load_dataset
    from fedrec.core.data.split import leave_one_out
    from fedrec.core.training.implicit import TrainingConfig
    from fedrec.core.training.local_round import new_local_parameters
    from fedrec.server.loop import initial_global_arrays

    split = leave_one_out(load_dataset("synthetic", "", 0))
    user = split.user_data(3, for_evaluation=False)
    arrays = initial_global_arrays(RunConfig(dim=8), split.n_items)
    local = new_local_parameters("mf", split.n_items, 8, 0, 3)
    dp = RecordDP(noise_multiplier=0.0, clip=0.5, accountant="rdp", sample_rate=0.1, divisor=16)
    config = TrainingConfig(optimizer="sgd", lr=0.1)
    results = [train_user_private("mf", 8, arrays, local, user, config, 1, 1, _rng(1), dp,
                                  device=device)[0] for device in ("cpu", "cuda")]
    for name in arrays:
        np.testing.assert_allclose(results[0].update[name], results[1].update[name], atol=1e-5)
