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
import shutil
import signal
import subprocess
import tempfile
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
    stop_process_group,
    wait_for_port,
)

CONNECTION_NAME = "fedrec"
# Folder that holds the runtime folders (default /tmp). Keep it short: Ray's socket paths
# below it (…/ray/ray/session_<date>_<pid>/sockets/plasma_store) must stay under 107 bytes.
RUNTIME_PARENT_ENV = "FEDREC_RUNTIME_DIR"
STARTUP_TIMEOUT_S = 60.0



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
        # Ray's head node otherwise waits at most 30 s (fixed in its C++ core) for the GCS
        # server to publish the port it picked; on a loaded 2-core machine that deadline was
        # missed several times in a row. With the port given, Ray connects with retries.
        # The port lies below the ephemeral range so no outgoing connection can take it.
        self.env["RAY_GCS_SERVER_PORT"] = str(free_listening_port())
        if ray_address:  # an existing Ray cluster (`ray start --head`): ray.init() joins it
            self.env["RAY_ADDRESS"] = ray_address
            del self.env["RAY_GCS_SERVER_PORT"]
        self.superlink: subprocess.Popen | None = None

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
            runtime.start_superlink()
            yield runtime
        finally:
            runtime.stop()
            shutil.rmtree(root, ignore_errors=True)
