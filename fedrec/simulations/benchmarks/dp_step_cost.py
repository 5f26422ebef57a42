"""What record-level DP costs per local step: the Opacus step vs the plain torch step.

One local training step on one client's model (one user, ``--items`` items, ``--dim``),
on the same batch of ``--batch-size`` sampled positives each paired with
``--negatives`` negatives, with the same restructured forward (users and items
``(b, 1+k)`` → scores ``(b, 1+k)``) and the same optimiser:

* **no DP** — plain torch: forward, the batch's mean loss, backward, optimiser step;
* **DP** — :class:`fedrec.core.privacy.record_level.PrivatePhase.step`: forward,
  per-example gradients (or, for ``ghost``, per-example gradient norms and a second
  backward), joint clipping to ``C`` over all parameters, Gaussian noise on every
  coordinate, optimiser step — once per ``grad_sample_mode``, and once more for
  ``ghost`` with Opacus' own embedding norm sampler instead of fedrec's
  (:func:`~fedrec.core.privacy.record_level.lookup_norm_sample`).

Every variant runs on its own model built from the same seed; after ``--warmup``
rounds, ``--steps`` rounds each run every variant once, in a rotating order
(interleaved, so drifts of the machine hit all of them alike). The table gives the
median milliseconds per step and the ratio DP / no DP (target ≤ 2×). Torch runs at
one thread, as the clients do. A second table checks each mode at these sizes: one
clipped step against a per-example autograd loop.

    python -m fedrec.simulations.benchmarks.dp_step_cost --items 1682 --dim 32 --batch-size 16,64
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from fedrec.core.models.base import Recommender
from fedrec.core.models.registry import build_model
from fedrec.core.privacy.record_level import (
    DEFAULT_GRAD_SAMPLE_MODE,
    GRAD_SAMPLE_MODES,
    PrivatePhase,
    RecordDP,
    RecordLoss,
    draw_negatives,
    record_examples,
    record_losses,
)
from fedrec.core.privacy.secure_random import secure_generator
from fedrec.core.training.implicit import TrainingConfig, make_optimizer

TARGET_RATIO = 2.0
PLAIN = "no DP"
GHOST = "ghost"
# ghost clipping with Opacus' own embedding norm sampler, for comparison
GHOST_OPACUS_NORMS = "ghost (Opacus embedding norms)"
# fedrec's own vectorised step (the cohort path of dp record, fedrec.core.privacy.record_cohort), one user
VECTORISED = "vmap (cohort path)"
DP_VARIANTS = (*GRAD_SAMPLE_MODES, GHOST_OPACUS_NORMS, VECTORISED)


def plain_step(model: Recommender, config: TrainingConfig) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """The non-private step on ``model``: same forward and loss, no per-example work."""
    optimizer = make_optimizer(list(model.parameters()), config)
    criterion = RecordLoss(config.loss)
    model.train()

    def step(positives: torch.Tensor, negatives: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        users, items = record_examples(positives, negatives)
        criterion(model(users, items)).backward()
        optimizer.step()

    return step


def relative_step_error(
    model_name: str, n_items: int, dim: int, batch_size: int, negatives: int, loss: str, mode: str, seed: int
) -> float:
    """How far one Opacus step is from a per-example autograd loop, relative to its size.

    σ = 0, SGD with lr 1 and ``q = 1`` make the step exactly ``−Σ_i clip(g_i)/b``;
    ``C`` is the median per-example norm, so half the examples are clipped. Returns
    ``max|Δθ − Δθ_loop| / max|Δθ_loop|`` over all parameters.
    """
    rng = np.random.default_rng(seed)
    records = rng.choice(n_items, size=batch_size, replace=False).astype(np.int64)
    positives = torch.from_numpy(records)
    secure = secure_generator()
    users, items = record_examples(positives, draw_negatives(positives, n_items, negatives, secure))
    reference = build_model(model_name, 1, n_items, dim, seed)
    params = list(reference.parameters())
    grads = []
    for i in range(batch_size):
        ell = record_losses(reference(users[i:i + 1], items[i:i + 1]), loss)[0]
        grads.append(torch.autograd.grad(ell, params))
    norms = torch.stack([torch.sqrt(sum((g ** 2).sum() for g in gs)) for gs in grads])
    clip = float(norms.median())
    factors = (clip / (norms + 1e-6)).clamp(max=1.0)
    expected = [sum(f * gs[j] for f, gs in zip(factors, grads)) / batch_size for j in range(len(params))]

    model = build_model(model_name, 1, n_items, dim, seed)
    before = [p.detach().clone() for p in model.parameters()]
    config = TrainingConfig(lr=1.0, batch_size=batch_size, negatives=negatives, loss=loss, optimizer="sgd")
    dp = RecordDP(0.0, clip, "rdp", mode, sample_rate=1.0, divisor=batch_size)
    with PrivatePhase(model, list(model.parameters()), records, config, dp, secure) as phase:
        phase.step(positives, items[:, 1:])
    error = max(float((b - p.detach() - e).abs().max()) for b, p, e in zip(before, model.parameters(), expected))
    return error / max(float(e.abs().max()) for e in expected)


def vectorised_step(model_name: str, n_items: int, dim: int, config: TrainingConfig, dp_template: RecordDP,
                    batch_size: int, secure: object, seed: int) -> Callable[[torch.Tensor, torch.Tensor], object]:
    """One user's step through :func:`fedrec.core.privacy.record_cohort.dp_update` (all parameters trained)."""
    from fedrec.core.privacy.record_cohort import dp_update
    from fedrec.core.training.cohort import _StackedOptimizer

    model = build_model(model_name, 1, n_items, dim, seed)
    params = {name: value.detach()[None].clone() for name, value in model.named_parameters()}
    optimizer = _StackedOptimizer(params, config)
    dp = RecordDP(dp_template.noise_multiplier, dp_template.clip, dp_template.accountant, sample_rate=0.25,
                  divisor=batch_size)
    names = list(params)

    def step(positives: torch.Tensor, negatives: torch.Tensor) -> object:
        owner = torch.zeros(len(positives), dtype=torch.int64)
        items = torch.cat([positives[:, None], negatives], dim=1)
        return dp_update(model, params, names, owner, items, [secure], n_items, config.loss, dp, optimizer, {})

    return step


def time_steps(
    model_name: str,
    n_items: int,
    dim: int,
    batch_size: int,
    config: TrainingConfig,
    dp_template: RecordDP,
    warmup: int,
    steps: int,
    seed: int,
) -> dict[str, float]:
    """Median seconds per step of each variant (``PLAIN`` and every grad_sample_mode)."""
    rng = np.random.default_rng(seed)
    n_records = 4 * batch_size  # q = 1/4; the step's cost depends on the batch, not on n
    records = rng.choice(n_items, size=n_records, replace=False).astype(np.int64)
    positives = torch.from_numpy(records[:batch_size])
    secure = secure_generator()
    negatives = draw_negatives(positives, n_items, config.negatives, secure)

    variants: dict[str, Callable[[torch.Tensor, torch.Tensor], object]] = {
        PLAIN: plain_step(build_model(model_name, 1, n_items, dim, seed), config)
    }
    phases = []
    variants[VECTORISED] = vectorised_step(model_name, n_items, dim, config, dp_template, batch_size, secure, seed)
    for variant in DP_VARIANTS:
        if variant == VECTORISED:
            continue
        mode = GHOST if variant == GHOST_OPACUS_NORMS else variant
        model = build_model(model_name, 1, n_items, dim, seed)
        model.train()
        dp = RecordDP(dp_template.noise_multiplier, dp_template.clip, dp_template.accountant, mode,
                      sample_rate=0.25, divisor=batch_size)
        phase = PrivatePhase(model, list(model.parameters()), records, config, dp, secure,
                             opacus_embedding_norms=variant == GHOST_OPACUS_NORMS)
        phases.append(phase)
        variants[variant] = phase.step
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
        for round_ in range(warmup + steps):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                variants[name](positives, negatives)
                elapsed = time.perf_counter() - started
                if round_ >= warmup:
                    times[name].append(elapsed)
    finally:
        for phase in phases:
            phase.close()
    return {name: statistics.median(values) for name, values in times.items()}


def main(
    items: int = typer.Option(1682, help="catalogue size (ML-100K: 1682)"),
    dim: int = typer.Option(32),
    batch_size: str = typer.Option("16,64", help="batch sizes, comma-separated"),
    negatives: int = typer.Option(4),
    models: str = typer.Option("mf,neumf"),
    loss: str = typer.Option("bce"),
    optimizer: str = typer.Option("adam"),
    noise_multiplier: float = typer.Option(1.0),
    clip: float = typer.Option(1.0),
    warmup: int = typer.Option(20),
    steps: int = typer.Option(200, help="timed steps per variant"),
    seed: int = typer.Option(0),
    out: Path | None = typer.Option(None, help="also write the rows to this JSON file"),
) -> None:
    torch.set_num_threads(1)
    console = Console(width=200)
    # a template: only σ, C and the accountant are read from it (the schedule is set per batch size)
    dp = RecordDP(noise_multiplier, clip, "rdp", sample_rate=0.25, divisor=1)
    rows = []
    for model_name in models.split(","):
        for batch in (int(b) for b in batch_size.split(",")):
            config = TrainingConfig(lr=0.01, batch_size=batch, negatives=negatives, loss=loss,
                                    optimizer=optimizer)
            seconds = time_steps(model_name, items, dim, batch, config, dp, warmup, steps, seed)
            errors = {mode: relative_step_error(model_name, items, dim, batch, negatives, loss, mode, seed)
                      for mode in GRAD_SAMPLE_MODES}
            rows.append({"model": model_name, "batch_size": batch,
                         **{f"{mode}_relative_error": e for mode, e in errors.items()},
                         **{f"{name}_ms": 1e3 * s for name, s in seconds.items()},
                         **{f"{v}_ratio": seconds[v] / seconds[PLAIN] for v in DP_VARIANTS}})
    _print(console, rows, items, dim, negatives, optimizer, steps)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2))


def _print(console: Console, rows: list[dict], items: int, dim: int, negatives: int, optimizer: str,
           steps: int) -> None:
    table = Table(title=f"one local step, median of {steps} (ms; ratio to no DP) — {items} items, d={dim}, "
                        f"{negatives} negatives, {optimizer}, torch threads={torch.get_num_threads()}")
    table.add_column("model")
    table.add_column("batch", justify="right")
    table.add_column(PLAIN, justify="right")
    for variant in DP_VARIANTS:
        marker = " (default)" if variant == DEFAULT_GRAD_SAMPLE_MODE else ""
        table.add_column(f"{variant}{marker}", justify="right")
    for row in rows:
        cells = [f"{row[f'{v}_ms']:.2f} ({row[f'{v}_ratio']:.2f}×)" for v in DP_VARIANTS]
        table.add_row(row["model"], str(row["batch_size"]), f"{row[f'{PLAIN}_ms']:.2f}", *cells)
    console.print(table)
    errors = Table(title="one clipped step (σ=0, SGD lr 1, C = median per-example norm) vs a per-example "
                         "autograd loop: max |Δ − Δ_loop| / max |Δ_loop|")
    errors.add_column("model")
    errors.add_column("batch", justify="right")
    for mode in GRAD_SAMPLE_MODES:
        errors.add_column(mode, justify="right")
    for row in rows:
        errors.add_row(row["model"], str(row["batch_size"]),
                       *[f"{row[f'{mode}_relative_error']:.1e}" for mode in GRAD_SAMPLE_MODES])
    console.print(errors)
    worst = max(row[f"{DEFAULT_GRAD_SAMPLE_MODE}_ratio"] for row in rows)
    verdict = "within" if worst <= TARGET_RATIO else "above"
    console.print(f"default mode {DEFAULT_GRAD_SAMPLE_MODE!r}: worst DP/no-DP ratio {worst:.2f}× "
                  f"({verdict} the {TARGET_RATIO:.0f}× target)")


if __name__ == "__main__":
    typer.run(main)
