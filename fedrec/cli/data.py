"""``fedrec data``: download and export datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fedrec.cli.common import fail
from fedrec.core.config.run_config import RunConfig

# the options' defaults: a dataclass's class attributes are its fields' defaults (building a
# RunConfig would validate it, which imports the model families and torch)
DEFAULTS = RunConfig

data_app = typer.Typer(no_args_is_help=True, help="Datasets: download and inspect.")


@data_app.command("download")
def data_download(
    name: str = typer.Argument(..., help="dataset to fetch: ml-100k"),
    dir: Path = typer.Option(..., "--dir", help="folder to put the dataset in"),
    url: Optional[str] = typer.Option(None, help="override the download address (a mirror)"),
) -> None:
    """Download a public dataset and verify its checksum."""
    from fedrec.core.data.download import ML100K_URL, DownloadError, download_ml100k

    if name != "ml-100k":
        fail(f"unknown dataset {name!r}: only ml-100k can be downloaded")
    try:
        folder = download_ml100k(dir, url or ML100K_URL)
    except DownloadError as err:
        fail(str(err))
    typer.echo(f"ml-100k verified in {folder}; use --dataset ml-100k --data-dir {dir}")


@data_app.command("export")
def data_export(
    dataset: str = typer.Option(DEFAULTS.dataset, help="synthetic, ml-100k or a CSV path"),
    data_dir: str = typer.Option("", help="folder holding ml-100k"),
    clients: int = typer.Option(2, help="number of device CSV files (users dealt round-robin)"),
    out: Path = typer.Option(..., help="folder for items.txt and client-K.csv"),
    seed: int = typer.Option(DEFAULTS.seed),
    force: bool = typer.Option(False, help="overwrite existing files"),
) -> None:
    """Write an item catalogue and one CSV per device, to try a deployment."""
    from fedrec.core.data.export import CATALOGUE_FILE, export_for_devices
    from fedrec.core.data.loaders import load_dataset

    try:
        paths = export_for_devices(load_dataset(dataset, data_dir, seed), clients, out, force=force)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        fail(str(err))
    typer.echo(f"catalogue {out / CATALOGUE_FILE}; device files {paths[0]} … {paths[-1]}")
