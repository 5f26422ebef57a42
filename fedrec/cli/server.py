"""``fedrec server``: the federation server of a deployment (a Flower SuperLink) and its runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from fedrec.cli.common import fail, warn
from fedrec.cli.run_options import GENERATED, RunOptions, run_options
from fedrec.core.config.run_config import SERVER_RUN, RunConfig

server_app = typer.Typer(no_args_is_help=True, help="The federation server (a Flower SuperLink).")
DEFAULT_SERVER_STATE = Path("~/.fedrec/server")
STOPPED_EXIT_CODE = 3  # `server status` of a server that is not running (as `systemctl status` does)


@server_app.command("start")
def server_start(
    certs: Optional[Path] = typer.Option(None, help="folder made by `fedrec certs init` (TLS + node auth)"),
    state: Path = typer.Option(DEFAULT_SERVER_STATE, help="server state: database, logs, runs"),
    address: str = typer.Option("0.0.0.0", help="interface the Fleet API listens on (the Control API: 127.0.0.1)"),
    fleet_port: int = typer.Option(9092, help="port SuperNodes connect to (open it in the firewall)"),
    control_port: int = typer.Option(9093, help="port of the Control API on 127.0.0.1 (fedrec server run/status)"),
    serverappio_port: int = typer.Option(9091, help="local port between the SuperLink and its ServerApp"),
    insecure: bool = typer.Option(False, help="no TLS and no node authentication (testing only)"),
) -> None:
    """Start the SuperLink in the background (TLS and SuperNode authentication on by default)."""
    from fedrec.server.superlink import ServerError, start_server

    if insecure:
        warn("--insecure: no TLS and no node authentication; anyone who reaches the port can join "
              "and read the model. Do not use beyond a test on one machine.")
    try:
        info = start_server(state.expanduser(), certs, address, fleet_port, control_port, serverappio_port, insecure)
    except (ServerError, RuntimeError, OSError) as err:  # RuntimeError: the SuperLink exited or never listened
        fail(f"the server did not start: {err}")
    security = "TLS + SuperNode authentication" if info.tls else "INSECURE"
    typer.echo(f"SuperLink PID {info.pid}: fleet {info.fleet_address}, control {info.control_address} ({security})")
    typer.echo(f"state in {info.state_dir}; log {info.state_dir}/superlink.log; stop with fedrec server stop")


@server_app.command("register-client")
def server_register_client(
    public_key: Path = typer.Argument(..., help="a device's NAME.pub (from `fedrec certs client`)"),
    state: Path = typer.Option(DEFAULT_SERVER_STATE),
) -> None:
    """Admit a device: register its SuperNode public key."""
    from fedrec.server.superlink import ServerError, register_client

    try:
        node_id = register_client(state.expanduser(), public_key)
    except (ServerError, OSError) as err:
        fail(str(err))
    typer.echo(f"registered {public_key.name}: node id {node_id}")


@server_app.command("run")
@run_options(SERVER_RUN, reserved={
    "dataset": "a deployment's data stays on the devices", "data_dir": "a deployment's data stays on the devices",
    "catalogue": "give --catalogue FILE"})
def server_run(
    catalogue: Optional[Path] = typer.Option(None, help="item catalogue on the server: one raw item id per line "
                                             "(fedrec data export writes one)"),
    state: Path = typer.Option(DEFAULT_SERVER_STATE),
    name: Optional[str] = typer.Option(None, help="run directory name under STATE/runs (default: a timestamp)"),
    resume: Optional[str] = typer.Option(None, help="continue the checkpointed run STATE/runs/NAME"),
    run: RunOptions = GENERATED,
    timeout: Optional[float] = typer.Option(None, help="give up (and stop the run) after this many seconds"),
) -> None:
    """Submit a training run of the fedrec App to the running server and wait for it to end.

    While it runs, prints one line per round (devices online, replies, round time, loss and,
    on evaluation rounds, the metrics: under DP only what metrics.jsonl holds), when it waits
    for devices, and once a warning when the training loss keeps rising."""
    from fedrec.core.run_files import METRICS_FILE
    from fedrec.reporting.progress import RunFollower
    from fedrec.server.checkpoint import checkpointed_config
    from fedrec.server.superlink import ServerError, run_directory, submit_run

    state = state.expanduser()
    try:
        if resume is not None:
            run_dir = run_directory(state, resume)
            user_config = checkpointed_config(run_dir, run.resume_overrides())
            config = RunConfig.from_user_config(user_config)
        else:
            if catalogue is None:
                fail("give --catalogue FILE (the item catalogue), or --resume NAME")
            catalogue = catalogue.expanduser().resolve()
            if not catalogue.is_file():
                fail(f"catalogue {catalogue} not found")
            run_dir = run_directory(state, name)
            if (run_dir / "metrics.jsonl").exists():
                fail(f"{run_dir} already holds a run: choose another --name or --resume {run_dir.name}")
            config = RunConfig(**run.overrides(), dataset="deployment", catalogue=str(catalogue),
                               out_dir=str(run_dir.resolve()))
            user_config = config.to_user_config()
        log_path = run_dir.with_name(run_dir.name + ".log")
        typer.echo(f"run {run_dir.name}: log {log_path}; results in {run_dir}")
        follower = RunFollower(run_dir / METRICS_FILE, config.rounds, config.eval_k, typer.echo, warn,
                               log_path=log_path, log_offset=log_path.stat().st_size if log_path.exists() else 0)
        typer.echo(f"submitting the run: {config.rounds} rounds with at least {config.min_nodes} device(s) (min-nodes)")
        code = submit_run(state, user_config, log_path, timeout_s=timeout, on_poll=follower.poll)
    except TimeoutError:  # before OSError, its base class
        fail(f"the run did not end within {timeout} s (stopped); see {log_path}")
    except (ServerError, ValueError, OSError) as err:
        fail(str(err))
    summary_path = run_dir / "summary.json"
    if code != 0 or not summary_path.exists():
        fail(f"the run failed (flwr exit code {code}); see {log_path}")
    summary = json.loads(summary_path.read_text())
    metrics = {k: v for k, v in summary.items() if "@" in k and "itempop" not in k}
    took = f" in {summary['wall_seconds']:.1f} s" if "wall_seconds" in summary else ""
    noised = " (noised releases, dp)" if summary.get("config", {}).get("dp", "off") != "off" else ""
    typer.echo(f"done: {summary.get('rounds')} rounds{took}; "
               + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())) + noised)


@server_app.command("status")
def server_status_command(
    state: Path = typer.Option(DEFAULT_SERVER_STATE, help="the server's state folder (as given to server start)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Is the server running, on which addresses, which devices and runs does it know.

    Exit status 0 when it runs, 3 when it has stopped (the LSB/systemctl convention for
    "not running"), 2 when STATE holds no readable server."""
    from fedrec.server.superlink import ServerError, server_status

    try:
        status = server_status(state.expanduser())
    except (ServerError, OSError) as err:
        fail(str(err))
    if as_json:
        typer.echo(json.dumps(status, indent=2, default=str))
    else:
        _print_status(status)
    if not status["running"]:
        raise typer.Exit(STOPPED_EXIT_CODE)


def _print_status(status: dict) -> None:
    typer.echo(f"{'running' if status['running'] else 'stopped'} (PID {status['pid']}), fleet "
               f"{status['fleet_address']}, TLS {'on' if status['tls'] else 'OFF'}, "
               f"node auth {'on' if status['node_auth'] else 'OFF'}")
    for node in status.get("nodes", []) if isinstance(status.get("nodes"), list) else []:
        typer.echo(f"  node {node.get('node-id')}: {node.get('status', '')}")
    for run in status.get("runs", []) if isinstance(status.get("runs"), list) else []:
        typer.echo(f"  run {run.get('run-id')}: {run.get('status', '')}")


@server_app.command("stop")
def server_stop(state: Path = typer.Option(DEFAULT_SERVER_STATE)) -> None:
    """Stop the server started from STATE (its SuperLink, SuperExec and any ServerApp)."""
    from fedrec.server.superlink import stop_server

    try:
        stopped = stop_server(state.expanduser())
    except OSError as err:
        fail(f"cannot stop the server of {state}: {err}")
    typer.echo("server stopped" if stopped else "no server was running")
