"""``fedrec client``: a device of a deployment (a Flower SuperNode) and its offline
recommendations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from fedrec.cli.common import fail, warn
from fedrec.client.round_in_progress import BUSY_POLL_S

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
    connect_timeout: float = typer.Option(90.0, min=1.0, help="seconds to wait for the server to admit this device; "
                                          "if it has not by then, the SuperNode is stopped and the command fails"),
    keep_retrying: bool = typer.Option(False, help="if the server has not admitted this device within "
                                       "--connect-timeout, leave the SuperNode retrying in the background "
                                       "(e.g. when the server starts later) instead of failing"),
    busy_poll: float = typer.Option(BUSY_POLL_S, min=0.01, max=60.0, help="seconds between looks for the next message "
                                    "while a secure-aggregation round (--dp user-distributed) runs on this device; "
                                    "otherwise Flower's 3 s. 3 keeps Flower's interval throughout"),
) -> None:
    """Start this device's SuperNode (background; stop with fedrec client stop).

    Fails, and stops the SuperNode, when the server has not admitted the device within
    --connect-timeout (unreachable address, unregistered key, wrong CA), unless
    --keep-retrying.
    """
    from fedrec.client.encrypted_file import KeySource
    from fedrec.client.supernode import ClientError, start_client

    if insecure:
        warn("--insecure: the connection is not encrypted and the server cannot tell this device from another")
    try:
        info = start_client(server, ca, key, data, state_dir, device, insecure, foreground,
                            connect_wait_s=connect_timeout, stop_unconnected=not keep_retrying,
                            busy_poll=busy_poll)
    except (ClientError, OSError) as err:
        fail(str(err))
    if foreground and info.pid != 0:  # start_client reports a failed foreground SuperNode as -exit code
        fail(f"the SuperNode exited with code {-info.pid}; see its output above")
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

    try:
        stopped = stop_client(state_dir)
    except OSError as err:
        fail(f"cannot stop the client of {state_dir}: {err}")
    typer.echo("client stopped" if stopped else "no client was running")


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
