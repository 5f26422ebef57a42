"""``fedrec compare``: every model centrally, federated and with DP on one split."""

from __future__ import annotations

from pathlib import Path

import typer

from fedrec.cli.common import fail
from fedrec.core.config.run_config import RunConfig

# the options' defaults: a dataclass's class attributes are its fields' defaults (building a
# RunConfig would validate it, which imports the model families and torch)
DEFAULTS = RunConfig


def compare(
    dataset: str = typer.Option(DEFAULTS.dataset, help="synthetic, ml-100k or a path to a CSV file"),
    data_dir: str = typer.Option("", help="folder holding ml-100k (u.data, u.item)"),
    models: str = typer.Option("", help="comma-separated models (default: all): itempop, user-knn, item-knn, bpr, "
                               "mf, gmf, mlp, neumf, hybrid, content, sequence, explicit-mf"),
    quick: bool = typer.Option(False, help="a user subsample and a tenth of the training (minutes, not an hour)"),
    epsilon: float = typer.Option(8.0, help="ε of the DP rows (user-level, δ = --delta)"),
    delta: float = typer.Option(1e-5, help="δ of the DP rows"),
    cold_max_items: int = typer.Option(5, help="cold-start users: at most this many training items"),
    cold_start: bool = typer.Option(True, help="run the cold-start section"),
    seed: int = typer.Option(DEFAULTS.seed),
    threads: int = typer.Option(1, help="torch threads"),
    out: Path = typer.Option(..., help="folder for compare.json, compare.md and compare.png"),
) -> None:
    """Every model centrally and federated (and with DP at one ε) on one split: compare.json/.md/.png."""
    from dataclasses import replace

    from fedrec.simulations.compare import FULL, QUICK, CompareConfig, run_compare

    try:
        budget = replace(QUICK if quick else FULL, cold_start=cold_start)
        config = CompareConfig(dataset=dataset, data_dir=data_dir,
                               models=tuple(m.strip() for m in models.split(",") if m.strip()), budget=budget,
                               quick=quick, seed=seed, epsilon=epsilon, delta=delta, cold_max_items=cold_max_items,
                               threads=threads)
        result = run_compare(config, out, progress=lambda line: typer.echo(line))
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    problems = [r for r in result.rows + result.cold_rows if r["status"] != "ok"]
    typer.echo(f"{len(result.rows)} rows, {len(result.cold_rows)} cold-start rows in {result.meta['wall_seconds']:.0f} s"
               f"{f' ({len(problems)} did not run, see compare.md)' if problems else ''}; report in {out}/compare.md")
