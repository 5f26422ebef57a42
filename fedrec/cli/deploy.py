"""``fedrec certs`` / ``fedrec server`` / ``fedrec client``: a real deployment over secured gRPC."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from fedrec.core.config.run_config import RunConfig

certs_app = typer.Typer(no_args_is_help=True, help="TLS certificates and SuperNode keys.")
server_app = typer.Typer(no_args_is_help=True, help="The federation server (a Flower SuperLink).")
client_app = typer.Typer(no_args_is_help=True, help="A device (a Flower SuperNode) and its offline recommendations.")

DEFAULTS = RunConfig()
DEFAULT_SERVER_STATE = Path("~/.fedrec/server")
DEFAULT_CLIENT_STATE = Path("~/.fedrec/client")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _warn(message: str) -> None:
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


# --- certs -------------------------------------------------------------------------------

@certs_app.command("init")
def certs_init(
    directory: Path = typer.Argument(..., help="folder for the CA, the server certificate and SuperNode keys"),
    host: list[str] = typer.Option(..., "--host", help="DNS name or IP address clients use to reach the server "
                                   "(repeat for several); each becomes a SubjectAlternativeName"),
    force: bool = typer.Option(False, help="overwrite a non-empty folder (a new CA: every client needs the new ca.crt)"),
    days: int = typer.Option(825, help="validity of the server certificate in days"),
    loopback: bool = typer.Option(True, help="also name 127.0.0.1 and localhost (the server's own tools connect there)"),
) -> None:
    """Make a CA and a server certificate for the given hosts (private keys 0600)."""
    from fedrec.runtime.certs import init_certs

    hosts = list(dict.fromkeys([*host, *(LOOPBACK_HOSTS if loopback else ())]))
    try:
        paths = init_certs(directory, hosts, force=force, days=days)
    except (ValueError, FileExistsError) as err:
        _fail(str(err))
    typer.echo(f"CA certificate      {paths.ca_cert}  (give it to every client: --ca)")
    typer.echo(f"CA key (0600)       {paths.ca_key}  (keep it offline)")
    typer.echo(f"server certificate  {paths.server_cert}  for {', '.join(hosts)}")
    typer.echo(f"server key (0600)   {paths.server_key}")
    typer.echo(f"next: fedrec certs client NAME {directory}")


@certs_app.command("client")
def certs_client(
    name: str = typer.Argument(..., help="the device's name (letters, digits, - and _)"),
    directory: Path = typer.Argument(..., help="the folder made by `fedrec certs init`"),
) -> None:
    """Make a SuperNode key pair: DIR/supernodes/NAME (private, 0600) and NAME.pub."""
    from fedrec.runtime.certs import add_client

    try:
        keys = add_client(name, directory)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        _fail(str(err))
    typer.echo(f"private key (0600)  {keys.private_key}  (copy to the device: --key)")
    typer.echo(f"public key          {keys.public_key}  (on the server: fedrec server register-client)")


# --- server ------------------------------------------------------------------------------

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
        _warn("--insecure: no TLS and no node authentication; anyone who reaches the port can join "
              "and read the model. Do not use beyond a test on one machine.")
    try:
        info = start_server(state.expanduser(), certs, address, fleet_port, control_port, serverappio_port, insecure)
    except (ServerError, RuntimeError) as err:
        _fail(str(err))
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
    except ServerError as err:
        _fail(str(err))
    typer.echo(f"registered {public_key.name}: node id {node_id}")


@server_app.command("run")
def server_run(
    catalogue: Optional[Path] = typer.Option(None, help="item catalogue on the server: one raw item id per line "
                                             "(fedrec data export writes one)"),
    state: Path = typer.Option(DEFAULT_SERVER_STATE),
    name: Optional[str] = typer.Option(None, help="run directory name under STATE/runs (default: a timestamp)"),
    resume: Optional[str] = typer.Option(None, help="continue the checkpointed run STATE/runs/NAME"),
    rounds: Optional[int] = typer.Option(None, help=f"total rounds (default {DEFAULTS.rounds})"),
    model: str = typer.Option(DEFAULTS.model),
    dim: int = typer.Option(DEFAULTS.dim),
    local_epochs: int = typer.Option(DEFAULTS.local_epochs),
    user_epochs: int = typer.Option(DEFAULTS.user_epochs),
    lr: float = typer.Option(DEFAULTS.lr),
    server_lr: float = typer.Option(DEFAULTS.server_lr),
    executor: str = typer.Option(DEFAULTS.executor, help="how a device trains its users: per-client or cohort"),
    eval_every: int = typer.Option(DEFAULTS.eval_every),
    checkpoint_every: int = typer.Option(1, help="checkpoint every N rounds (a restarted server resumes there)"),
    seed: int = typer.Option(DEFAULTS.seed),
    min_nodes: int = typer.Option(DEFAULTS.min_nodes, help="devices a round waits for"),
    min_valid_updates: int = typer.Option(DEFAULTS.min_valid_updates, help="fewer valid updates: round skipped"),
    round_timeout: float = typer.Option(120.0, help="seconds a round waits for replies (slower devices are left out)"),
    clients_per_round: int = typer.Option(DEFAULTS.clients_per_round, help="dp user-central: expected devices per round"),
    dp: str = typer.Option(DEFAULTS.dp, help="off, record, user-local or user-central"),
    epsilon: Optional[float] = typer.Option(None),
    delta: float = typer.Option(DEFAULTS.delta),
    clip: float = typer.Option(DEFAULTS.clip),
    noise_multiplier: Optional[float] = typer.Option(None),
    accountant: str = typer.Option(DEFAULTS.accountant),
    dp_participations: int = typer.Option(DEFAULTS.dp_participations),
    record_sample_rate: float = typer.Option(DEFAULTS.record_sample_rate, help="record: public Poisson rate per step"),
    eval_noise_multiplier: float = typer.Option(DEFAULTS.eval_noise_multiplier,
                                                help="σ_e of noised evaluations under DP (0: derived)"),
    timeout: Optional[float] = typer.Option(None, help="give up (and stop the run) after this many seconds"),
) -> None:
    """Submit a training run of the fedrec App to the running server and wait for it to end."""
    from fedrec.server.checkpoint import checkpointed_config
    from fedrec.server.superlink import ServerError, run_directory, submit_run

    state = state.expanduser()
    try:
        if resume is not None:
            run_dir = run_directory(state, resume)
            user_config = checkpointed_config(run_dir, {} if rounds is None else {"rounds": rounds})
            RunConfig.from_user_config(user_config)
        else:
            if catalogue is None:
                _fail("give --catalogue FILE (the item catalogue), or --resume NAME")
            catalogue = catalogue.expanduser().resolve()
            if not catalogue.is_file():
                _fail(f"catalogue {catalogue} not found")
            run_dir = run_directory(state, name)
            if (run_dir / "metrics.jsonl").exists():
                _fail(f"{run_dir} already holds a run: choose another --name or --resume {run_dir.name}")
            config = RunConfig(
                dataset="deployment", rounds=rounds or DEFAULTS.rounds, model=model, dim=dim,
                local_epochs=local_epochs, user_epochs=user_epochs, lr=lr, server_lr=server_lr,
                executor=executor, eval_every=eval_every, checkpoint_every=checkpoint_every, seed=seed,
                min_nodes=min_nodes, min_valid_updates=min_valid_updates, round_timeout=round_timeout,
                clients_per_round=clients_per_round, dp=dp, delta=delta, clip=clip, accountant=accountant,
                dp_participations=dp_participations, epsilon=epsilon or 0.0, noise_multiplier=noise_multiplier or 0.0,
                record_sample_rate=record_sample_rate, eval_noise_multiplier=eval_noise_multiplier,
                catalogue=str(catalogue), out_dir=str(run_dir.resolve()),
            )
            user_config = config.to_user_config()
        log_path = run_dir.with_name(run_dir.name + ".log")
        typer.echo(f"run {run_dir.name}: log {log_path}; results in {run_dir}")
        code = submit_run(state, user_config, log_path, timeout_s=timeout)
    except (ServerError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    except TimeoutError:
        _fail(f"the run did not end within {timeout} s (stopped); see {log_path}")
    summary_path = run_dir / "summary.json"
    if code != 0 or not summary_path.exists():
        _fail(f"the run failed (flwr exit code {code}); see {log_path}")
    summary = json.loads(summary_path.read_text())
    metrics = {k: v for k, v in summary.items() if "@" in k and "itempop" not in k}
    took = f" in {summary['wall_seconds']:.1f} s" if "wall_seconds" in summary else ""
    noised = " (noised releases, dp)" if summary.get("config", {}).get("dp", "off") != "off" else ""
    typer.echo(f"done: {summary.get('rounds')} rounds{took}; "
               + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())) + noised)


@server_app.command("status")
def server_status_command(
    state: Path = typer.Option(DEFAULT_SERVER_STATE),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Is the server running, on which addresses, which devices and runs does it know."""
    from fedrec.server.superlink import ServerError, server_status

    try:
        status = server_status(state.expanduser())
    except (ServerError, OSError) as err:
        _fail(str(err))
    if as_json:
        typer.echo(json.dumps(status, indent=2, default=str))
        return
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

    stopped = stop_server(state.expanduser())
    typer.echo("server stopped" if stopped else "no server was running")


# --- client ------------------------------------------------------------------------------

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
        _warn("--insecure: the connection is not encrypted and the server cannot tell this device from another")
    try:
        info = start_client(server, ca, key, data, state_dir, device, insecure, foreground)
    except ClientError as err:
        _fail(str(err))
    if not foreground:
        typer.echo(f"SuperNode PID {info.pid} → {info.server} ({'TLS' if info.tls else 'INSECURE'}); log {info.log}")
        if info.node_id:
            typer.echo(f"connected: node id {info.node_id}")
        else:
            _warn(f"not connected yet (the server is unreachable or refuses this device); it keeps "
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
        _fail(str(err))
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
