"""``fedrec client start``: a Flower SuperNode for this device, over TLS with its own key.

The device's state directory (``--state-dir``) holds::

    STATE/state.enc       user vectors, accountant histories, last global model (encrypted)
    STATE/state.key       the AES key (0600), unless $FEDREC_STATE_PASSPHRASE is set
    STATE/supernode.pid   PID of the SuperNode (leader of its own process group)
    STATE/supernode.log   the SuperNode's log (and its ClientApp's)
    STATE/flwr/           FLWR_HOME of the SuperNode (the Flower Apps it received)

The SuperNode connects to the server's Fleet API with TLS (``--ca``: the CA that signed
the server's certificate) and authenticates with the device's private key (``--key``,
registered on the server with ``fedrec server register-client KEY.pub``). The
ClientApp finds the device's CSV and state directory in the node config.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fedrec.client import supernode_process
from fedrec.client.encrypted_file import KeySource, prepare_key
from fedrec.client.round_in_progress import BUSY_POLL_S
from fedrec.core.data.csv_file import load_csv
from fedrec.core.training.device import DEVICES
from fedrec.protocol.wire import NODE_AUTH_KEY, NODE_DATA_FILE, NODE_DEVICE, NODE_STATE_DIR
from fedrec.runtime.app_package import toml_value
from fedrec.runtime.processes import (
    flower_environment,
    free_port,
    read_pid_file,
    stop_group_by_pid,
    write_pid_file,
)

PID_FILE = "supernode.pid"
LOG_FILE = "supernode.log"
# How long `start` waits for the SuperNode to connect (or fail). One that has not connected
# by then is stopped (``stop_unconnected``, what `fedrec client start` does unless
# --keep-retrying) or keeps retrying in the background.
CONNECT_WAIT_S = 90.0
REACH_TIMEOUT_S = 3.0
CONNECTED_MARK = "SuperNode ID:"


class ClientError(Exception):
    """A client command cannot do what was asked (the message says why)."""


@dataclass(frozen=True)
class ClientInfo:
    pid: int
    server: str
    tls: bool
    log: Path
    node_id: str = ""  # empty while the SuperNode has not connected yet


def parse_server_address(server: str) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClientError(f"--server must be HOST:PORT, got {server!r}")
    return host.strip("[]"), int(port)


def running_pid(state_dir: Path) -> int | None:
    return read_pid_file(Path(state_dir).expanduser() / PID_FILE)


def supernode_command(server: str, ca: Path | None, key: Path | None, data: Path, state_dir: Path,
                      device: str, insecure: bool, clientappio_port: int,
                      busy_poll: float = BUSY_POLL_S) -> list[str]:
    """Flower's SuperNode, run by :mod:`fedrec.client.supernode_process` (fast polling during
    a SecAgg+ round: every ``busy_poll`` seconds instead of Flower's 3 s)."""
    entries = [(NODE_DATA_FILE, data), (NODE_STATE_DIR, state_dir), (NODE_DEVICE, device)]
    if key is not None and not insecure:  # the device countersigns its ledger rows with this key
        entries.append((NODE_AUTH_KEY, key))
    node_config = " ".join(f"{k}={toml_value(str(v))}" for k, v in entries)
    security = ["--insecure"] if insecure else [
        "--root-certificates", str(ca), "--auth-supernode-private-key", str(key)]
    return supernode_process.process_command(state_dir, busy_poll, [
        "--superlink", server, *security, "--node-config", node_config, "--isolation", "subprocess",
        "--clientappio-api-address", f"127.0.0.1:{clientappio_port}"])


def start_client(server: str, ca: Path | None, key: Path | None, data: Path, state_dir: Path,
                 device: str = "auto", insecure: bool = False, foreground: bool = False,
                 connect_wait_s: float = CONNECT_WAIT_S, stop_unconnected: bool = False,
                 busy_poll: float = BUSY_POLL_S) -> ClientInfo:
    """Check the inputs, prepare the state directory and start the SuperNode.

    Detached by default (PID in ``STATE/supernode.pid``; ``fedrec client stop``);
    ``foreground`` runs it in this process's terminal until it ends. A detached SuperNode
    that has not connected within ``connect_wait_s`` keeps retrying in the background,
    unless ``stop_unconnected``: then it is stopped (by its PID) and ClientError says why.
    """
    if connect_wait_s <= 0:
        raise ClientError(f"the connect timeout must be positive, got {connect_wait_s}")
    if not 0 < busy_poll <= 60:
        raise ClientError(f"--busy-poll must be in (0, 60] seconds, got {busy_poll}")
    parse_server_address(server)
    if device not in DEVICES:
        raise ClientError(f"unknown device {device!r}: choose one of {DEVICES}")
    data = Path(data).expanduser().resolve()
    state_dir = Path(state_dir).expanduser().resolve()
    if not insecure:
        if ca is None or key is None:
            raise ClientError("give --ca (the server's CA certificate) and --key (this device's private key), "
                              "or ask for --insecure")
        ca, key = Path(ca).expanduser().resolve(), Path(key).expanduser().resolve()
        for path, what in ((ca, "CA certificate"), (key, "private key")):
            if not path.is_file():
                raise ClientError(f"{what} {path} not found")
        if key.stat().st_mode & 0o077:
            raise ClientError(f"private key {key} is readable by others: chmod 600 it")
    try:
        load_csv(data)  # a malformed file fails here, with its line number
    except (FileNotFoundError, ValueError) as err:
        raise ClientError(str(err)) from err
    if (pid := running_pid(state_dir)) is not None:
        raise ClientError(f"a client is already running from {state_dir} (PID {pid}); fedrec client stop first")
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state_dir.chmod(0o700)
    prepare_key(KeySource.for_state_dir(state_dir))  # state.key (0600) on first start, unless a passphrase
    command = supernode_command(server, ca, key, data, state_dir, device, insecure, free_port(), busy_poll)
    env = flower_environment(state_dir / "flwr", state_dir / "ray")
    (state_dir / "flwr").mkdir(exist_ok=True, mode=0o700)
    log_path = state_dir / LOG_FILE
    if foreground:
        completed = subprocess.run(command, env=env, cwd=state_dir)
        return ClientInfo(pid=0 if completed.returncode == 0 else -completed.returncode, server=server,
                          tls=not insecure, log=log_path)
    deadline = time.monotonic() + connect_wait_s
    while True:
        process, node_id = _launch_and_wait(command, env, state_dir, log_path, deadline)
        if process.poll() is None and (node_id or not stop_unconnected):
            return ClientInfo(pid=process.pid, server=server, tls=not insecure, log=log_path, node_id=node_id)
        if process.poll() is None:
            _stop_started(process, state_dir)
            raise ClientError(_not_connected_reason(server, connect_wait_s, log_path))
        (state_dir / PID_FILE).unlink(missing_ok=True)
        reason = _early_exit_reason(log_path)
        if reason != STILL_ONLINE or time.monotonic() + REJOIN_PAUSE_S >= deadline:
            raise ClientError(f"the SuperNode exited (code {process.returncode}): {reason}; see {log_path}")
        time.sleep(REJOIN_PAUSE_S)  # the server still holds this device's previous session: wait it out


def _launch_and_wait(command: list[str], env: dict[str, str], state_dir: Path, log_path: Path,
                     deadline: float) -> tuple[subprocess.Popen, str]:
    """Start the SuperNode; return once it connected, exited, or the deadline passed."""
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=state_dir)
    write_pid_file(state_dir / PID_FILE, process.pid)
    node_id = ""
    try:
        while time.monotonic() < deadline and not node_id and process.poll() is None:
            node_id = _connected_node_id(log_path, offset)
            time.sleep(0.2)
    except BaseException:  # Ctrl-C while waiting: nothing keeps running behind the user's back
        _stop_started(process, state_dir)
        raise
    if process.poll() is not None:
        process.wait()
    return process, node_id


def _stop_started(process: subprocess.Popen, state_dir: Path) -> None:
    """Stop the SuperNode this call started (its process group, by its PID) and drop its PID file."""
    stop_group_by_pid(process.pid, grace_s=10)
    process.wait(timeout=10)
    (state_dir / PID_FILE).unlink(missing_ok=True)


def reach_problem(server: str, timeout_s: float = REACH_TIMEOUT_S) -> str | None:
    """Why nothing accepts a TCP connection at ``server`` (HOST:PORT), or None when something does."""
    host, port = parse_server_address(server)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except socket.gaierror as err:
        return f"cannot resolve {host!r}: {err.strerror}"
    except TimeoutError:
        return f"no answer within {timeout_s:.0f} s"
    except OSError as err:
        return (err.strerror or str(err)).lower()


def _not_connected_reason(server: str, waited_s: float, log_path: Path) -> str:
    """What ClientError says when the SuperNode did not connect in time (and was stopped)."""
    if (problem := reach_problem(server)) is not None:
        return (f"could not reach the server at {server} within {waited_s:.0f} s ({problem}): is the server "
                f"running, are the host and port right, is the port open in the firewall? The SuperNode was "
                f"stopped; see {log_path}")
    reason = _early_exit_reason(log_path)
    if reason == "unknown reason":
        reason = ("something accepts connections there but did not admit this device (not a SuperLink's Fleet "
                  "API, or TLS on one side only?)")
    return (f"the SuperNode did not connect to the server at {server} within {waited_s:.0f} s: {reason}. "
            f"It was stopped; see {log_path}")


def _connected_node_id(log_path: Path, offset: int) -> str:
    """The node id the SuperNode logged once the server admitted it ('' before that)."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        if CONNECTED_MARK in line:
            return line.split(CONNECTED_MARK, 1)[1].strip()
    return ""


STILL_ONLINE = ("the server still counts this device as connected (a previous session that ended without "
                "saying so); it lets it go after two missed heartbeats, about a minute")
REJOIN_PAUSE_S = 5.0
_KNOWN_FAILURES = (
    ("could not be activated", STILL_ONLINE),
    ("No SuperNode found with the given public key", "the server does not know this device's key: register "
     "its NAME.pub there (fedrec server register-client)"),
    ("CERTIFICATE_VERIFY_FAILED", "the server's certificate is not signed by the CA given with --ca"),
    ("SSL/TLS handshake error", "the TLS handshake failed (wrong CA, or the server name is not in its certificate)"),
)


def _early_exit_reason(log_path: Path) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "no log"
    for needle, reason in _KNOWN_FAILURES:
        if needle in text:
            return reason
    return "unknown reason"


def stop_client(state_dir: Path, grace_s: float = 10.0) -> bool:
    """Stop the SuperNode started from ``state_dir`` (its process group); False if none ran."""
    state_dir = Path(state_dir).expanduser()
    pid = running_pid(state_dir)
    (state_dir / PID_FILE).unlink(missing_ok=True)
    return pid is not None and stop_group_by_pid(pid, grace_s)
