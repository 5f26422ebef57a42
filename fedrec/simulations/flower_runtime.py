"""A private, throw-away Flower simulation runtime for one ``fedrec simulate`` call.

We use Flower's non-deprecated path — ``flwr run`` against a SuperLink in simulation
mode — instead of the deprecated ``flwr.simulation.run_simulation``. Everything is
private to the call and removed at the end:

* a temporary folder holding ``FLWR_HOME`` (with a connection named ``fedrec`` to our
  SuperLink), ``RAY_TMPDIR`` (short, because Ray's socket paths are length-limited)
  and a minimal Flower App folder (only a ``pyproject.toml`` whose components point
  at the installed ``fedrec`` package, so the FAB is a few hundred bytes);
* a private Ray head node (:mod:`fedrec.simulations.ray_cluster`: no dashboard, no
  autoscaler monitor), which Flower's simulation joins through ``RAY_ADDRESS`` instead
  of starting a whole head node inside ``flwr-simulation``;
* a ``flower-superlink --simulation`` process on a free loopback port.

The head node and the SuperLink start side by side, each in its own session, so that
each (with its children: ``flwr-simulation``; Ray's daemons and workers) is stopped by
process group — by the PID we started, never by name.

The environment sets no telemetry, no per-run dependency installation and no gRPC fork
support (see :data:`fedrec.simulations.ray_cluster.GRPC_NO_FORK_SUPPORT`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fedrec.runtime.app_package import toml_value as _toml_value
from fedrec.runtime.app_package import write_app_dir
from fedrec.runtime.processes import (  # noqa: F401  (free_port etc. are used by tests and benchmarks)
    console_script,
    flower_environment,
    free_listening_port,
    free_port,
    log_problems,
    stop_process_group,
    wait_for_port,
)
from fedrec.simulations.ray_cluster import GRPC_NO_FORK_SUPPORT, HEAD_FAILURE_LINES, HEAD_LOG, signal_name

CONNECTION_NAME = "fedrec"
# Folder that holds the runtime folders (default /tmp). Keep it short: Ray's socket paths
# below it (…/ray/ray/session_<date>_<pid>/sockets/plasma_store) must stay under 107 bytes.
RUNTIME_PARENT_ENV = "FEDREC_RUNTIME_DIR"
STARTUP_TIMEOUT_S = 60.0
# Ray's head node: how long its start may take (under load: seconds), how often a failed
# start is retried on a fresh port and folder, and where a failed start's logs are kept
# (below the run's folder; the same name as simulate's RAY_LOGS)
RAY_HEAD_TIMEOUT_S = 120.0
RAY_HEAD_ATTEMPTS = 3
RAY_LOGS = "ray-logs"
NO_RAY_LOGS_NOTE = "NO-RAY-LOGS.txt"


class SimulationRuntime:
    """Paths, environment and the SuperLink process of one private runtime."""

    def __init__(self, root: Path, log_dir: Path, ray_address: str = "") -> None:
        self.root = root
        self.flwr_home = root / "flwr"
        self.ray_tmp = root / "ray"
        self.app_dir = root / "app"
        self.log_dir = log_dir
        for folder in (self.flwr_home, self.ray_tmp, self.app_dir):
            folder.mkdir(parents=True)
        write_app_dir(self.app_dir)
        self.env = flower_environment(self.flwr_home, self.ray_tmp)
        self.control_port = free_port()
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION_NAME}"\n\n'
            f'[superlink.{CONNECTION_NAME}]\naddress = "127.0.0.1:{self.control_port}"\ninsecure = true\n'
        )
        self.env.update(GRPC_NO_FORK_SUPPORT)
        self.ray_address = ray_address  # an existing Ray cluster (`ray start --head`): ray.init() joins it
        self.ray_head: subprocess.Popen | None = None
        self.ray_head_attempt = 0
        if not ray_address:  # our own head node (started by start_ray_head)
            self.gcs_port = gcs_port()
            # the driver turns 127.0.0.1 into the machine's IP, which the head node uses
            ray_address = f"127.0.0.1:{self.gcs_port}"
        self.env["RAY_ADDRESS"] = ray_address
        self.superlink: subprocess.Popen | None = None

    @property
    def ray_head_log(self) -> Path:
        return self.ray_tmp / HEAD_LOG

    @property
    def _ready_file(self) -> Path:
        return self.root / "ray-head.json"

    def start_ray_head(self) -> None:
        """Start our Ray head node (returns at once; :meth:`wait_for_ray_head` waits for it)."""
        self.ray_head_attempt += 1
        command = [sys.executable, "-m", "fedrec.simulations.ray_cluster", "--temp-dir", str(self.ray_tmp / "ray"),
                   "--port", str(self.gcs_port), "--ready-file", str(self._ready_file)]
        with self.ray_head_log.open("ab") as log:
            self.ray_head = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.root,
            )

    def wait_for_ray_head(self, timeout_s: float = RAY_HEAD_TIMEOUT_S) -> dict[str, object]:
        """The head node's ready record once it is up; RuntimeError if it exits first or time runs out."""
        assert self.ray_head is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._ready_file.is_file():
                return json.loads(self._ready_file.read_text())
            if self.ray_head.poll() is not None:
                raise RuntimeError(f"Ray's head node exited ({signal_name(self.ray_head.returncode)})"
                                   f"{_problems(self.ray_head_log)}")
            time.sleep(0.1)
        raise RuntimeError(f"Ray's head node did not start within {timeout_s:.0f} s{_problems(self.ray_head_log)}")

    def restart_ray_head(self) -> None:
        """Stop a failed head node, clear its folder, and start a fresh one on a new port; a
        running SuperLink is restarted too, since its environment names the old port."""
        self.stop_ray_head()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        self.ray_tmp.mkdir(parents=True)
        self._ready_file.unlink(missing_ok=True)
        self.gcs_port = gcs_port()
        self.env["RAY_ADDRESS"] = f"127.0.0.1:{self.gcs_port}"
        self.start_ray_head()
        if self.superlink is not None:
            stop_process_group(self.superlink)
            self.superlink = None
            self.start_superlink()

    def stop_ray_head(self) -> None:
        if self.ray_head is not None:
            stop_process_group(self.ray_head)
            self.ray_head = None

    def start_superlink(self) -> None:
        log_path = self.log_dir / "superlink.log"
        command = [
            console_script("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
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
        wait_for_port(self.control_port, self.superlink, log_path, "flower-superlink", STARTUP_TIMEOUT_S)

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
            console_script("flwr"), "run", str(app_dir or self.app_dir), CONNECTION_NAME,
            *[arg for k, v in run_config.items() for arg in ("--run-config", f"{k}={_toml_value(v)}")],
            "--federation-config", federation, "--stream",
        ]

    def stop(self) -> None:
        """Stop the SuperLink (with the simulation, Ray's driver) first, then Ray's head node
        (that too when stopping the SuperLink is interrupted, e.g. by SIGTERM)."""
        try:
            if self.superlink is not None:
                stop_process_group(self.superlink)
                self.superlink = None
        finally:
            self.stop_ray_head()

    def keep_ray_logs(self, destination: Path) -> int:
        """Copy Ray's own logs (our head node's, GCS server, raylet, agents, …) out of the runtime
        before it is removed; returns how many were copied. Used when Ray failed, so the reason survives.

        ``destination`` is created even when Ray wrote no log (its daemons can die before they
        open one), holding a note that says so, so that a message naming it never points at
        nothing.
        """
        destination.mkdir(parents=True, exist_ok=True)
        copied = 0
        logs = [self.ray_head_log, *sorted(self.ray_tmp.glob("**/logs/**/*"))]
        for log_file in logs:
            if log_file.is_file() and not log_file.is_symlink() and log_file.suffix in {".out", ".err", ".log"}:
                target = destination / log_file.name
                if target.exists():  # the same name in a sub-folder (events/…)
                    target = destination / f"{log_file.parent.name}-{log_file.name}"
                shutil.copy2(log_file, target)
                copied += 1
        if not copied:
            (destination / NO_RAY_LOGS_NOTE).write_text(
                f"Ray wrote no log file below {self.ray_tmp} before it was stopped: its processes "
                "ended before they opened one (the reason, if any, is in flower.log beside this folder).\n")
        return copied


def ray_failed_to_start(log_text: str) -> bool:
    """Whether a Flower log shows Ray's head node failing to start.

    Flower calls ``ray.init`` inside ``RayBackend.init_ray`` before any client runs; an
    exception raised there means no round ran, so a fresh runtime is safe. (When Flower
    started the head node itself, its GCS server or raylet died there in about one start in
    eight on a loaded 2-core machine: forked from ``flwr-simulation`` while its gRPC threads
    were busy, see :mod:`fedrec.simulations.ray_cluster`. Flower now joins our own head
    node, so what is left to fail there is joining it.)
    """
    in_init = "in init_ray" in log_text and "Traceback" in log_text
    return in_init or ("Timed out waiting for file" in log_text and "gcs_server_port" in log_text)


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
def simulation_runtime(log_dir: Path, ray_address: str = "") -> Iterator[SimulationRuntime]:
    """A started runtime; on exit (also on SIGTERM) the SuperLink group is stopped and the temp folder removed."""
    parent = os.environ.get(RUNTIME_PARENT_ENV) or ("/tmp" if os.path.isdir("/tmp") else None)
    root = Path(tempfile.mkdtemp(prefix="fr-", dir=parent))
    runtime = SimulationRuntime(root, log_dir, ray_address)
    with _sigterm_raises():
        try:
            if not ray_address:
                runtime.start_ray_head()  # Ray and the SuperLink start side by side
            runtime.start_superlink()
            if not ray_address:
                start_ray_head_with_retries(runtime)
            yield runtime
        finally:
            runtime.stop()
            shutil.rmtree(root, ignore_errors=True)


def start_ray_head_with_retries(runtime: SimulationRuntime, attempts: int = RAY_HEAD_ATTEMPTS) -> dict[str, object]:
    """Wait for the head node :meth:`SimulationRuntime.start_ray_head` started; a failed start's
    logs are kept in ``<log_dir>/ray-logs/head-attempt-K`` and a fresh head node is started,
    up to ``attempts`` starts in all. RuntimeError, naming the kept logs, when none started."""
    for attempt in range(1, attempts + 1):
        try:
            return runtime.wait_for_ray_head()
        except RuntimeError as err:
            runtime.stop_ray_head()  # Ray's processes flush their logs when stopped
            kept = runtime.log_dir / RAY_LOGS / f"head-attempt-{runtime.ray_head_attempt}"
            runtime.keep_ray_logs(kept)
            if attempt == attempts:
                raise RuntimeError(f"{err}; Ray's logs of the {attempts} attempts are in {kept.parent}") from err
            print(f"Ray's head node failed to start (attempt {attempt} of {attempts}): {err}; its logs are in "
                  f"{kept}; starting a fresh head node", flush=True)
            runtime.restart_ray_head()
    raise AssertionError("unreachable")


def gcs_port() -> int:
    """A free port for the GCS server, above Ray's default worker ports (10002–19999, which other
    Ray clusters on the machine use) and below the ephemeral range (see :func:`free_listening_port`)."""
    for _ in range(100):
        if (port := free_listening_port()) >= 20_000:
            return port
    return free_listening_port()


def _problems(log_path: Path) -> str:
    """What the head node's log says went wrong: its own summary (the error, how each of Ray's
    processes ended) when it wrote one, else the last problem lines."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    summary = [line for line in lines if line.startswith(HEAD_FAILURE_LINES)]
    return f": {' | '.join(summary[-2:] or log_problems(log_path, limit=3))}" if summary or lines else ""
