"""``fedrec server``: a long-lived Flower SuperLink with TLS and SuperNode authentication.

The server's state directory holds everything the server keeps::

    STATE/server.json      addresses, TLS on/off, certificate paths, PID (what `status` prints)
    STATE/superlink.pid    PID of the SuperLink (leader of its own process group)
    STATE/superlink.log    the SuperLink's log (and its ServerApp's)
    STATE/superlink.db     Flower's database: registered SuperNode keys, runs (survives restarts)
    STATE/flwr/            FLWR_HOME: the `fedrec` connection to the Control API
    STATE/app/             the Flower App that `fedrec server run` submits
    STATE/runs/NAME/       one directory per training run: metrics, checkpoints, model, privacy.db

Secure by default: the Fleet API (where SuperNodes connect, on ``--address``) and the
Control API (where ``flwr``/``fedrec server run`` connect) use TLS with the certificates
of ``fedrec certs init``, and only SuperNodes whose public key was registered
(``fedrec server register-client``) are admitted (``--enable-supernode-auth``). The
Control API listens on 127.0.0.1 only: Flower 1.32 has no user authentication on it
outside its enterprise edition, so whoever reaches it could submit runs.
``--insecure`` turns TLS and node authentication off and must be asked for.

``start_server`` returns only once the SuperLink itself listens on its three ports. A port
that another process holds is refused before anything starts; a SuperLink that exits or
does not listen in time is stopped, its PID file removed, and the error quotes the lines
of its log that name the problem.

Processes are stopped by the PID we started (its process group: the SuperLink, its
SuperExec and the ServerApp), never by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from fedrec.runtime.app_package import toml_value, write_app_dir
from fedrec.runtime.certs import CA_CERT, SERVER_CERT, SERVER_KEY
from fedrec.runtime.processes import (
    PORT_IN_USE,
    console_script,
    flower_environment,
    lasting_bind_problem,
    pid_alive,
    read_pid_file,
    stop_group_by_pid,
    wait_until_listening,
    write_pid_file,
)

CONNECTION = "fedrec"
INFO_FILE = "server.json"
PID_FILE = "superlink.pid"
LOG_FILE = "superlink.log"
DATABASE_FILE = "superlink.db"
DEFAULT_FLEET_PORT = 9092
DEFAULT_CONTROL_PORT = 9093
DEFAULT_SERVERAPPIO_PORT = 9091
STARTUP_TIMEOUT_S = 60.0
# how long a port in use may take to be released (a server killed a moment ago) before start refuses
PORT_RELEASE_WAIT_S = 5.0
# how often `submit_run` looks at a running run's files (its on_poll)
POLL_S = 0.5


class ServerError(Exception):
    """A server command cannot do what was asked (the message says why)."""


@dataclass(frozen=True)
class ServerInfo:
    """What ``fedrec server start`` wrote to ``server.json``."""

    pid: int
    fleet_address: str
    control_address: str
    serverappio_address: str
    tls: bool
    node_auth: bool
    ca_cert: str
    state_dir: str

    @classmethod
    def read(cls, state_dir: Path) -> "ServerInfo":
        path = Path(state_dir) / INFO_FILE
        if not path.exists():
            raise ServerError(f"no server was started with --state {state_dir} ({path} missing)")
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as err:  # unreadable, not JSON, or other fields
            raise ServerError(f"cannot read {path} ({err}): start the server again (fedrec server start)") from err


def _paths(state_dir: Path) -> dict[str, Path]:
    state_dir = Path(state_dir).expanduser().resolve()
    return {
        "state": state_dir, "info": state_dir / INFO_FILE, "pid": state_dir / PID_FILE,
        "log": state_dir / LOG_FILE, "db": state_dir / DATABASE_FILE, "flwr": state_dir / "flwr",
        "app": state_dir / "app", "runs": state_dir / "runs",
    }


def server_environment(state_dir: Path) -> dict[str, str]:
    paths = _paths(state_dir)
    return flower_environment(paths["flwr"], paths["state"] / "ray")


def running_pid(state_dir: Path) -> int | None:
    return read_pid_file(_paths(state_dir)["pid"])


def start_server(state_dir: Path, certs_dir: Path | None, address: str = "0.0.0.0",
                 fleet_port: int = DEFAULT_FLEET_PORT, control_port: int = DEFAULT_CONTROL_PORT,
                 serverappio_port: int = DEFAULT_SERVERAPPIO_PORT, insecure: bool = False,
                 timeout_s: float = STARTUP_TIMEOUT_S) -> ServerInfo:
    """Start a detached SuperLink (TLS + node auth unless ``insecure``); returns what was started."""
    paths = _paths(state_dir)
    if (pid := running_pid(state_dir)) is not None:
        raise ServerError(f"a server is already running from {paths['state']} (PID {pid}); "
                          "stop it first (fedrec server stop)")
    tls_args: list[str] = []
    ca_cert = ""
    if not insecure:
        if certs_dir is None:
            raise ServerError("give --certs DIR (made by `fedrec certs init`), or ask for --insecure")
        certs_dir = Path(certs_dir).expanduser().resolve()
        files = {name: certs_dir / name for name in (CA_CERT, SERVER_CERT, SERVER_KEY)}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise ServerError(f"missing certificate files {missing}: run `fedrec certs init {certs_dir} --host …`")
        ca_cert = str(files[CA_CERT])
        tls_args = ["--ssl-ca-certfile", ca_cert, "--ssl-certfile", str(files[SERVER_CERT]),
                    "--ssl-keyfile", str(files[SERVER_KEY]), "--enable-supernode-auth"]
    for port in (fleet_port, control_port, serverappio_port):
        if not 0 < port < 65536:
            raise ServerError(f"port {port} is outside 1..65535")
    if len({fleet_port, control_port, serverappio_port}) != 3:
        raise ServerError("the fleet, control and serverappio ports must differ")
    _check_ports_free({"fleet": (address, fleet_port), "control": ("127.0.0.1", control_port),
                       "serverappio": ("127.0.0.1", serverappio_port)})
    for key in ("state", "flwr", "runs"):
        paths[key].mkdir(parents=True, exist_ok=True, mode=0o700)
    write_app_dir(paths["app"])
    info = ServerInfo(
        # the Control API (submit runs, register devices) has no user authentication in Flower
        # 1.32: it listens on loopback only, so only the server machine's operators reach it
        pid=0, fleet_address=f"{address}:{fleet_port}", control_address=f"127.0.0.1:{control_port}",
        serverappio_address=f"127.0.0.1:{serverappio_port}", tls=not insecure, node_auth=not insecure,
        ca_cert=ca_cert, state_dir=str(paths["state"]),
    )
    _write_connection(paths["flwr"], control_port, ca_cert, insecure)
    command = [
        console_script("flower-superlink"), *(["--insecure"] if insecure else tls_args),
        "--isolation", "subprocess", "--database", str(paths["db"]),
        "--fleet-api-address", info.fleet_address, "--control-api-address", info.control_address,
        "--serverappio-api-address", info.serverappio_address,
    ]
    log_offset = paths["log"].stat().st_size if paths["log"].exists() else 0
    with paths["log"].open("ab") as log:
        process = subprocess.Popen(command, env=server_environment(state_dir), stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=paths["state"])
    write_pid_file(paths["pid"], process.pid)
    try:
        wait_until_listening(process, [fleet_port, control_port, serverappio_port], paths["log"], log_offset,
                             "flower-superlink", timeout_s)
    except BaseException:  # its error, a timeout or Ctrl-C: no SuperLink and no PID file stays behind
        stop_group_by_pid(process.pid, grace_s=5)
        process.wait(timeout=10)
        paths["pid"].unlink(missing_ok=True)
        raise
    info = ServerInfo(**{**asdict(info), "pid": process.pid})
    tmp = paths["info"].with_name(INFO_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(info), indent=2))
    os.replace(tmp, paths["info"])
    return info


def _check_ports_free(listeners: dict[str, tuple[str, int]]) -> None:
    """Refuse to start when one of the SuperLink's ports cannot be listened on (in use, wrong address)."""
    for role, (host, port) in listeners.items():
        problem = lasting_bind_problem(host, port, PORT_RELEASE_WAIT_S)
        if problem == PORT_IN_USE:
            raise ServerError(f"port {port} (the {role} port, on {host}) is already in use by another process: "
                              f"stop that process or choose another --{role}-port")
        if problem is not None:
            hint = ": check --address" if role == "fleet" else ""
            raise ServerError(f"cannot listen on {host}:{port} (the {role} port): {problem}{hint}")


def _write_connection(flwr_home: Path, control_port: int, ca_cert: str, insecure: bool) -> None:
    """FLWR_HOME/config.toml: the `fedrec` connection to this SuperLink's Control API."""
    lines = [f'[superlink]\ndefault = "{CONNECTION}"\n', f"[superlink.{CONNECTION}]",
             f'address = "127.0.0.1:{control_port}"']
    lines.append("insecure = true" if insecure else f"root-certificates = {toml_value(ca_cert)}")
    (flwr_home / "config.toml").write_text("\n".join(lines) + "\n")


def stop_server(state_dir: Path, grace_s: float = 15.0) -> bool:
    """Stop the SuperLink started from ``state_dir`` (its whole process group); False if none ran."""
    paths = _paths(state_dir)
    pid = running_pid(state_dir)
    paths["pid"].unlink(missing_ok=True)
    if pid is None:
        return False
    return stop_group_by_pid(pid, grace_s)


def flwr_command(state_dir: Path, *args: str, timeout_s: float | None = 120.0,
                 capture: bool = True) -> subprocess.CompletedProcess:
    """Run ``flwr ARGS`` against this server's Control API (its FLWR_HOME)."""
    if running_pid(state_dir) is None:
        raise ServerError(f"no server is running from {_paths(state_dir)['state']}: fedrec server start first")
    try:
        return subprocess.run([console_script("flwr"), *args], env=server_environment(state_dir),
                              capture_output=capture, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise ServerError(f"`flwr {' '.join(args[:2])}` did not answer within {timeout_s:.0f} s") from err
    except OSError as err:
        raise ServerError(f"cannot run flwr: {err}") from err


def register_client(state_dir: Path, public_key: Path) -> str:
    """Register a SuperNode's public key (``flwr supernode register``); returns Flower's answer."""
    public_key = Path(public_key).expanduser().resolve()
    if not public_key.is_file():
        raise ServerError(f"public key {public_key} not found (made by `fedrec certs client NAME DIR`)")
    if ServerInfo.read(state_dir).node_auth is False:
        raise ServerError("this server runs --insecure, without node authentication: nothing to register")
    done = flwr_command(state_dir, "supernode", "register", str(public_key), CONNECTION, "--format", "json")
    answer = _json_answer(done)
    if done.returncode != 0 or not answer.get("success", False):
        raise ServerError(f"registering {public_key.name} failed: {answer.get('error-message') or done.stdout or done.stderr}")
    return str(answer.get("node-id", ""))


def _json_answer(done: subprocess.CompletedProcess) -> dict:
    try:
        value = json.loads(done.stdout)
    except (json.JSONDecodeError, TypeError):
        return {"success": False, "error-message": (done.stdout or "") + (done.stderr or "")}
    return value if isinstance(value, dict) else {"success": False, "error-message": str(value)}


def server_status(state_dir: Path) -> dict:
    """PID, addresses, registered/connected SuperNodes and runs, as a dict."""
    info = ServerInfo.read(state_dir)
    status: dict = {"running": running_pid(state_dir) is not None, **asdict(info)}
    if status["running"]:
        nodes = _json_answer(flwr_command(state_dir, "supernode", "list", CONNECTION, "--format", "json"))
        runs = _json_answer(flwr_command(state_dir, "ls", CONNECTION, "--format", "json"))
        status["nodes"] = nodes.get("nodes", nodes)
        status["runs"] = runs.get("runs", runs)
    return status


def wait_until_stopped(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


def run_directory(state_dir: Path, name: str | None = None) -> Path:
    """``STATE/runs/NAME`` (default: a timestamp)."""
    runs = _paths(state_dir)["runs"]
    return runs / (name or time.strftime("run-%Y%m%d-%H%M%S"))


def run_command(state_dir: Path, run_config: dict[str, object], app_dir: Path | None = None) -> list[str]:
    """``flwr run`` of the fedrec App (or ``app_dir``) against this server, streaming its log until it ends."""
    app_dir = app_dir or write_app_dir(_paths(state_dir)["app"])
    overrides = [arg for k, v in run_config.items() for arg in ("--run-config", f"{k}={toml_value(v)}")]
    return [console_script("flwr"), "run", str(app_dir), CONNECTION, *overrides, "--stream"]


def submit_run(state_dir: Path, run_config: dict[str, object], log_path: Path,
               timeout_s: float | None = None, app_dir: Path | None = None,
               on_poll: Callable[[], None] | None = None, poll_s: float = POLL_S) -> int:
    """Submit a training run and wait for it to end; its log goes to ``log_path``; returns flwr's exit code.

    ``on_poll`` (e.g. :meth:`fedrec.reporting.progress.RunFollower.poll`) is called every
    ``poll_s`` seconds while the run goes, and once after it ended.
    """
    if running_pid(state_dir) is None:
        raise ServerError(f"no server is running from {_paths(state_dir)['state']}: fedrec server start first")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with log_path.open("ab") as log:
        process = subprocess.Popen(run_command(state_dir, run_config, app_dir), env=server_environment(state_dir),
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            while True:
                wait_s = poll_s if on_poll is not None else None
                if deadline is not None:
                    left = max(0.0, deadline - time.monotonic())
                    wait_s = left if wait_s is None else min(wait_s, left)
                try:
                    code = process.wait(timeout=wait_s)
                except subprocess.TimeoutExpired:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise
                    if on_poll is not None:
                        on_poll()
                    continue
                if on_poll is not None:
                    on_poll()  # what the run wrote last
                return code
        except subprocess.TimeoutExpired as err:
            stop_group_by_pid(process.pid, grace_s=5)
            process.wait(timeout=10)
            raise TimeoutError(f"the run did not end within {timeout_s} s") from err
        except BaseException:
            stop_group_by_pid(process.pid, grace_s=5)
            process.wait(timeout=10)
            raise
