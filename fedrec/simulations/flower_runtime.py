"""A private, throw-away Flower simulation runtime for one ``fedrec simulate`` call.

We use Flower's non-deprecated path — ``flwr run`` against a SuperLink in simulation
mode — instead of the deprecated ``flwr.simulation.run_simulation``. Everything is
private to the call and removed at the end:

* a temporary folder holding ``FLWR_HOME`` (with a connection named ``fedrec`` to our
  SuperLink), ``RAY_TMPDIR`` (short, because Ray's socket paths are length-limited)
  and a minimal Flower App folder (only a ``pyproject.toml`` whose components point
  at the installed ``fedrec`` package, so the FAB is a few hundred bytes);
* a ``flower-superlink --simulation`` process on a free loopback port, started in its
  own session so that it, its ``flwr-simulation`` child and Ray's processes can be
  stopped together by process group — by the PID we started, never by name.

The environment sets no telemetry and no per-run dependency installation.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fedrec.core.run_config import RunConfig

CONNECTION_NAME = "fedrec"
# Folder that holds the runtime folders (default /tmp). Keep it short: Ray's socket paths
# below it (…/ray/ray/session_<date>_<pid>/sockets/plasma_store) must stay under 107 bytes.
RUNTIME_PARENT_ENV = "FEDREC_RUNTIME_DIR"
STARTUP_TIMEOUT_S = 60.0

APP_PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "fedrec-sim"
version = "0.1.0"
description = "fedrec simulation app (components come from the installed fedrec package)"
license = { text = "Apache-2.0" }
dependencies = []

[tool.flwr.app]
publisher = "fedrec"

[tool.flwr.app.components]
serverapp = "fedrec.server.app:app"
clientapp = "fedrec.client.app:app"

[tool.flwr.app.config]
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_listening_port(rng: random.Random | None = None) -> int:
    """A free port below the kernel's ephemeral range (for a server that binds it later).

    A port from :func:`free_port` is in the ephemeral range, where any process's next
    outgoing connection may take it before our server binds it; seen with Ray's GCS
    server, which then died at start-up. Ports below the range are only ever taken by
    listeners, and we check that none holds this one now.
    """
    rng = rng or random.Random()
    low, _ = _ephemeral_range()
    floor = 10_000 if low > 12_000 else 1_024
    for _ in range(200):
        port = rng.randrange(floor, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    return free_port()


def flower_environment(flwr_home: Path, ray_tmp: Path) -> dict[str, str]:
    env = os.environ.copy()
    env.update({
        "FLWR_HOME": str(flwr_home),
        "RAY_TMPDIR": str(ray_tmp),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_DEDUP_LOGS": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
        # Flower spawns its helpers (flower-superexec, flwr-simulation) from PATH
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    })
    return env


def _bin(name: str) -> str:
    """A console script of this interpreter's environment (falls back to PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _wait_for_port(port: int, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with code {process.returncode}; see {log_path}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"flower-superlink did not open port {port} in {STARTUP_TIMEOUT_S:.0f}s; see {log_path}")


def stop_process_group(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the process group led by ``process`` (ours), then SIGKILL what is left."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:  # children (flwr-simulation, Ray) share the group even after the leader exits
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(timeout=5)


class SimulationRuntime:
    """Paths, environment and the SuperLink process of one private runtime."""

    def __init__(self, root: Path, log_dir: Path) -> None:
        self.root = root
        self.flwr_home = root / "flwr"
        self.ray_tmp = root / "ray"
        self.app_dir = root / "app"
        self.log_dir = log_dir
        for folder in (self.flwr_home, self.ray_tmp, self.app_dir):
            folder.mkdir(parents=True)
        defaults = "".join(f"{k} = {_toml_value(v)}\n" for k, v in RunConfig().to_user_config().items())
        (self.app_dir / "pyproject.toml").write_text(APP_PYPROJECT + defaults)
        self.env = flower_environment(self.flwr_home, self.ray_tmp)
        self.control_port = free_port()
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION_NAME}"\n\n'
            f'[superlink.{CONNECTION_NAME}]\naddress = "127.0.0.1:{self.control_port}"\ninsecure = true\n'
        )
        # Ray's head node otherwise waits at most 30 s (fixed in its C++ core) for the GCS
        # server to publish the port it picked; on a loaded 2-core machine that deadline was
        # missed several times in a row. With the port given, Ray connects with retries.
        # The port lies below the ephemeral range so no outgoing connection can take it.
        self.env["RAY_GCS_SERVER_PORT"] = str(free_listening_port())
        self.superlink: subprocess.Popen | None = None

    def start_superlink(self) -> None:
        log_path = self.log_dir / "superlink.log"
        command = [
            _bin("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
            "--control-api-address", f"127.0.0.1:{self.control_port}",
            "--serverappio-api-address", f"127.0.0.1:{free_port()}",
            "--fleet-api-address", f"127.0.0.1:{free_port()}",
            "--database", ":flwr-in-memory:",
        ]
        with log_path.open("ab") as log:
            self.superlink = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.root,
            )
        _wait_for_port(self.control_port, self.superlink, log_path)

    def flwr_run_command(
        self,
        run_config: dict[str, object],
        num_supernodes: int,
        cpus_per_client: int,
        app_dir: Path | None = None,
        gpus_per_client: float = 0.0,
    ) -> list[str]:
        """``flwr run`` of ``app_dir`` (default: the minimal app) against our SuperLink.

        Ray hides GPUs from an actor that reserved none, so a node that should train on
        CUDA must reserve a share (``gpus_per_client``, fractions allowed).
        """
        federation = f"num-supernodes={num_supernodes} client-resources-num-cpus={cpus_per_client}"
        if gpus_per_client > 0:
            federation += f" client-resources-num-gpus={gpus_per_client:g}"
        return [
            _bin("flwr"), "run", str(app_dir or self.app_dir), CONNECTION_NAME,
            *[arg for k, v in run_config.items() for arg in ("--run-config", f"{k}={_toml_value(v)}")],
            "--federation-config", federation, "--stream",
        ]

    def stop(self) -> None:
        if self.superlink is not None:
            stop_process_group(self.superlink)
            self.superlink = None

    def keep_ray_logs(self, destination: Path) -> int:
        """Copy Ray's own logs (GCS server, raylet, …) out of the runtime before it is removed.

        Returns how many files were copied; used when Ray failed, so the reason survives.
        """
        copied = 0
        for log_file in sorted(self.ray_tmp.glob("**/logs/*")):
            if log_file.is_file() and log_file.suffix in {".out", ".err", ".log"}:
                destination.mkdir(parents=True, exist_ok=True)
                shutil.copy2(log_file, destination / log_file.name)
                copied += 1
        return copied


def ray_failed_to_start(log_text: str) -> bool:
    """Whether a Flower log shows Ray's head node failing to start.

    Flower starts Ray inside ``RayBackend.init_ray`` before any client runs; an exception
    raised there (seen: the GCS server missing Ray's fixed 30 s deadline to publish its
    port on a loaded 2-core machine) means no round ran, so a fresh runtime is safe.
    """
    in_init = "in init_ray" in log_text and "Traceback" in log_text
    return in_init or ("Timed out waiting for file" in log_text and "gcs_server_port" in log_text)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class Terminated(Exception):
    """SIGTERM arrived while a runtime was up (raised so that clean-up code runs)."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` (main thread only), so ``finally`` blocks run.

    Python's default SIGTERM action ends the process at once, which would leave the
    SuperLink (its own session) and Ray running; with this, ``kill PID`` of a
    ``fedrec simulate`` stops what it started.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise Terminated(f"received signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def simulation_runtime(log_dir: Path) -> Iterator[SimulationRuntime]:
    """A started runtime; on exit (also on SIGTERM) the SuperLink group is stopped and the temp folder removed."""
    parent = os.environ.get(RUNTIME_PARENT_ENV) or ("/tmp" if os.path.isdir("/tmp") else None)
    root = Path(tempfile.mkdtemp(prefix="fr-", dir=parent))
    runtime = SimulationRuntime(root, log_dir)
    with _sigterm_raises():
        try:
            runtime.start_superlink()
            yield runtime
        finally:
            runtime.stop()
            shutil.rmtree(root, ignore_errors=True)
