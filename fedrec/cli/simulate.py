"""``fedrec simulate`` (a federated run, every user a client) and ``fedrec train-central``
(its central twin)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fedrec.cli.common import fail, warn
from fedrec.cli.run_options import RunOptions, run_options
from fedrec.core.config.run_config import SIMULATE, RunConfig

DEFAULTS = RunConfig  # the class attributes are the defaults; building one would import torch


def _absolute_data_paths(dataset: str, data_dir: str) -> tuple[str, str]:
    """A CSV dataset path and ``--data-dir`` made absolute: the ServerApp and ClientApps run in
    other working directories, where a relative path would name nothing."""
    from fedrec.core.data.loaders import is_csv_path

    if is_csv_path(dataset):
        dataset = str(Path(dataset).expanduser().resolve())
    if data_dir:
        data_dir = str(Path(data_dir).expanduser().resolve())
    return dataset, data_dir


@run_options(SIMULATE, reserved={"catalogue": "a deployment's item catalogue (fedrec server run --catalogue)"})
def simulate(
    run: RunOptions,
    out: Optional[Path] = typer.Option(None, help="run directory (required unless --resume)"),
    resume: Optional[Path] = typer.Option(None, help="continue the checkpointed run in this directory"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    ray_address: str = typer.Option("", help="HOST:PORT of an existing Ray cluster's head (`ray start --head`); "
                                    "default: a private Ray on this machine"),
) -> None:
    """Run a federated simulation (every user a client) and write the run directory.

    The data is split and checked here first: users that cannot train or be evaluated are
    named in a warning, and a run in which nobody can be evaluated is refused before Flower
    starts. A failed run leaves --out resumable (a checkpoint) or as it was.
    """
    from fedrec.simulations.flower_runtime import Terminated
    from fedrec.simulations.simulate import resume_config
    from fedrec.simulations.simulate import simulate as run_simulation

    if resume is None and out is None:
        fail("give --out DIR (or --resume DIR)")
    try:
        if resume is not None:
            config = resume_config(resume, run.resume_overrides())
            out_dir = resume
        else:
            values = run.overrides()
            values["dataset"], values["data_dir"] = _absolute_data_paths(values["dataset"], values["data_dir"])
            config = RunConfig(**values)
            out_dir = out
        summary = run_simulation(config, out_dir, show_progress=not quiet, ray_address=ray_address, warn=warn)
    except (ValueError, RuntimeError, Terminated) as err:
        fail(str(err))
    except OSError as err:  # FileNotFoundError, FileExistsError (an earlier run), PermissionError, …
        fail(os_error_line(err))
    print_summary(summary, out_dir)


def train_central(
    dataset: str = typer.Option(DEFAULTS.dataset, help="synthetic, synthetic-<N>[k], ml-100k or a path to a CSV file"),
    data_dir: str = typer.Option("", help="folder holding ml-100k (u.data)"),
    model: str = typer.Option(DEFAULTS.model, help="the recommender (mf, gmf, mlp, neumf, hybrid, content)"),
    epochs: int = typer.Option(20, help="passes over all training interactions"),
    lr: float = typer.Option(0.001, help="Adam's learning rate"),
    batch_size: int = typer.Option(256, help="positives per batch"),
    dim: int = typer.Option(DEFAULTS.dim, help="embedding size"),
    loss: str = typer.Option(DEFAULTS.loss, help="bce or bpr"),
    seed: int = typer.Option(DEFAULTS.seed, help="seed of the split and the initial model"),
    eval_every: int = typer.Option(5, help="evaluate every N epochs (and the last)"),
    out: Path = typer.Option(..., help="run directory"),
) -> None:
    """Train the same model on the same split centrally (plain torch, no Flower)."""
    from fedrec.core.training.central import CentralConfig
    from fedrec.core.training.implicit import TrainingConfig
    from fedrec.simulations.central_twin import run_central
    from fedrec.simulations.simulate import check_data, check_out_dir

    try:
        check_out_dir(out.expanduser().resolve())
        # the same split as a federated run: refused here when nobody could be evaluated
        check_data(RunConfig(dataset=dataset, data_dir=data_dir, model=model, dim=dim, seed=seed), warn)
        summary = run_central(
            CentralConfig(dataset=dataset, data_dir=data_dir, model=model, epochs=epochs, dim=dim, seed=seed,
                          eval_every=eval_every, training=TrainingConfig(lr=lr, batch_size=batch_size, loss=loss)),
            out,
        )
    except ValueError as err:
        fail(str(err))
    except OSError as err:
        fail(os_error_line(err))
    print_summary(summary, out)


def os_error_line(err: OSError) -> str:
    """One line for an ``OSError``: our own message, or ``PATH: reason`` for the system's."""
    if err.strerror and err.filename:
        return f"{err.filename}: {err.strerror}"
    return str(err)


def print_summary(summary: dict, out_dir: Path) -> None:
    """A run's ``summary.json`` as a table: its metrics, rounds and wall time."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fedrec run in {out_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(k for k in summary if "@" in k):
        table.add_row(key, f"{summary[key]:.4f}")
    table.add_row("rounds", str(summary.get("rounds")))
    if "wall_seconds" in summary:  # (under DP timings stay in server_internal.jsonl)
        table.add_row("wall seconds", f"{summary['wall_seconds']:.1f}")
    config = summary.get("config", {})
    if isinstance(config, dict) and config.get("dp", "off") != "off":
        table.caption = ("metrics are noised releases (dp): run `fedrec audit` on the run directory; "
                         "realised sample sizes and timings are in server_internal.jsonl (do not share)")
    Console().print(table)
