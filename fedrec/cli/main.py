"""The ``fedrec`` command line (typer): the app and its commands, one module per group.

========================  ==========================================
module                    commands
========================  ==========================================
:mod:`.simulate`          ``simulate``, ``train-central``
:mod:`.compare`           ``compare``
:mod:`.audit`             ``audit``, ``ledger-key``
:mod:`.data`              ``data download``, ``data export``
:mod:`.certs`             ``certs init``, ``certs client``
:mod:`.server`            ``server start/register-client/run/status/stop``
:mod:`.client`            ``client start/stop/recommend``
========================  ==========================================

The run-config options of ``simulate`` and ``server run`` are generated from
:class:`~fedrec.core.config.run_config.RunConfig` by :mod:`.run_options`.
"""

from __future__ import annotations

import typer

from fedrec.cli.audit import audit, ledger_key
from fedrec.cli.certs import certs_app
from fedrec.cli.client import client_app
from fedrec.cli.compare import compare
from fedrec.cli.data import data_app
from fedrec.cli.server import server_app
from fedrec.cli.simulate import _absolute_data_paths, simulate, train_central

__all__ = ["app", "main", "_absolute_data_paths"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Federated, private recommenders on Flower.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"fedrec {version('fedrec')}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print fedrec's version and exit")) -> None:
    """Federated, private recommenders on Flower."""


app.command()(simulate)
app.command("train-central")(train_central)
app.command()(compare)
app.add_typer(data_app, name="data")
app.add_typer(certs_app, name="certs")
app.add_typer(server_app, name="server")
app.add_typer(client_app, name="client")
app.command()(audit)
app.command("ledger-key")(ledger_key)


def main() -> None:
    """The ``fedrec`` entry point."""
    app()


if __name__ == "__main__":
    main()
