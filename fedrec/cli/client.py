"""``fedrec client``: a device of a deployment (a Flower SuperNode) and its offline
recommendations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from fedrec.cli.common import fail, warn

client_app = typer.Typer(no_args_is_help=True, help="A device (a Flower SuperNode) and its offline recommendations.")
DEFAULT_CLIENT_STATE = Path("~/.fedrec/client")


@client_app.command("start")
def client_start(
    server: str = typer.Option(..., help="the server's Fleet API, HOST:PORT (HOST as in its certificate)"),
    ca: Optional[Path] = typer.Option(None, help="the CA certificate (ca.crt from `fedrec certs init`)"),
    key: Optional[Path] = typer.Option(None, help="this device's private key (from `fedrec certs client`)"),
    data: Path = typer.Option(..., help="this device's interactions: CSV user,item[,rating[,timestamp]]"),
    state_dir: Path = typer.Option(DEFAULT_CLIENT_STATE, help="encrypted state: user vectors, ε spent, last model"),
    device: str = typer.Option("auto", help="auto, cpu or cuda: where this device trains"),
    insecure: bool = typer.Option(False, help="connect without TLS or authentication (a server started --insecure)"),
    foreground: bool = typer.Option(False, help="run in this terminal instead of in the background"),
) -> None:
    """Start this device's SuperNode (background; stop with fedrec client stop)."""
    from fedrec.client.encrypted_file import KeySource
    from fedrec.client.supernode import ClientError, start_client

    if insecure:
        warn("--insecure: the connection is not encrypted and the server cannot tell this device from another")
    try:
        info = start_client(server, ca, key, data, state_dir, device, insecure, foreground)
    except ClientError as err:
        fail(str(err))
    if not foreground:
        typer.echo(f"SuperNode PID {info.pid} → {info.server} ({'TLS' if info.tls else 'INSECURE'}); log {info.log}")
        if info.node_id:
            typer.echo(f"connected: node id {info.node_id}")
        else:
            warn(f"not connected yet (the server is unreachable or refuses this device); it keeps "
                  f"retrying: see {info.log}")
        typer.echo(f"state encrypted with {KeySource.for_state_dir(state_dir.expanduser()).describe()}")


@client_app.command("stop")
def client_stop(state_dir: Path = typer.Option(DEFAULT_CLIENT_STATE)) -> None:
    """Stop this device's SuperNode (its state stays)."""
    from fedrec.client.supernode import stop_client

    typer.echo("client stopped" if stop_client(state_dir) else "no client was running")


@client_app.command("recommend")
def client_recommend(
    state_dir: Path = typer.Option(DEFAULT_CLIENT_STATE),
    user: Optional[list[str]] = typer.Option(None, help="raw user id (repeat; default: every user of the device)"),
    k: int = typer.Option(10, help="list length"),
    data: Optional[Path] = typer.Option(None, help="the device's CSV (default: the one it trained with)"),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table"),
) -> None:
    """Top-K items per user from the last global model and the local vectors, offline."""
    from fedrec.client.encrypted_file import StateDecryptionError
    from fedrec.client.recommend import RecommendError, recommend

    try:
        lists = recommend(state_dir, user, k, data)
    except (RecommendError, StateDecryptionError, FileNotFoundError, PermissionError, ValueError) as err:
        fail(str(err))
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in lists], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    for rec in lists:
        table = Table(title=f"user {rec.user} ({rec.kind}, model of round {rec.server_round})")
        table.add_column("rank", justify="right")
        table.add_column("item")
        table.add_column("score", justify="right")
        for rank, (item, score) in enumerate(zip(rec.items, rec.scores), start=1):
            table.add_row(str(rank), item, f"{score:.4f}")
        Console().print(table)
