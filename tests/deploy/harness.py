"""Real deployments on 127.0.0.1: a SuperLink and SuperNodes as separate processes.

Every process a test starts is recorded by the PID file of its state directory and
stopped by that PID (its process group) when the test ends; a check then fails the test
if any process whose FLWR_HOME lies below the test's folder is still alive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedrec.client.supernode import start_client, stop_client, supernode_command
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.export import CATALOGUE_FILE, client_file, export_for_devices
from fedrec.core.data.loaders import load_dataset
from fedrec.runtime.certs import add_client, init_certs
from fedrec.runtime.processes import (
    flower_environment,
    free_listening_port,
    free_port,
    pids_with_environ,
    write_pid_file,
)
from fedrec.server.superlink import (
    register_client,
    run_directory,
    start_server,
    stop_server,
    submit_run,
)

HERE = Path(__file__).resolve().parent
# 1000 synthetic users dealt to 50 device files: 20 users per device keeps a round short
DEVICE_FILES = 50


def processes_below(folder: Path) -> set[int]:
    """Live PIDs whose FLWR_HOME lies below ``folder`` (what our servers and devices start)."""
    return pids_with_environ(f"FLWR_HOME={folder}")


@dataclass
class Deployment:
    """One server and its devices under ``root``; everything started is stopped by ``close``."""

    root: Path
    fleet_port: int = field(default_factory=free_listening_port)
    control_port: int = field(default_factory=free_listening_port)
    serverappio_port: int = field(default_factory=free_listening_port)
    devices: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.certs = self.root / "certs"
        self.data = self.root / "data"
        self.server_state = self.root / "server"
        init_certs(self.certs, ["127.0.0.1", "localhost"])
        export_for_devices(load_dataset("synthetic", "", 0), DEVICE_FILES, self.data)

    @property
    def fleet(self) -> str:
        return f"127.0.0.1:{self.fleet_port}"

    def start_server(self, insecure: bool = False):
        return start_server(self.server_state, None if insecure else self.certs, "127.0.0.1",
                            self.fleet_port, self.control_port, self.serverappio_port, insecure=insecure)

    def new_key(self, name: str, register: bool = True):
        keys = add_client(name, self.certs)
        if register:
            register_client(self.server_state, keys.public_key)
        return keys

    def start_device(self, name: str, index: int, register: bool = True, ca: Path | None = None,
                     insecure: bool = False):
        """Start (or restart) device ``name`` on data file ``index``; a new name gets a key first."""
        key = self.certs / "supernodes" / name
        if not key.exists():
            self.new_key(name, register)
        state = self.root / name
        self.devices[name] = state
        return start_client(self.fleet, ca or self.certs / "ca.crt", key, client_file(self.data, index),
                            state, device="cpu", insecure=insecure, connect_wait_s=5 if insecure else 150)

    def start_raw_device(self, name: str, index: int, extra_node_config: str, env_extra: dict[str, str]) -> int:
        """A SuperNode started by hand (for a node config fedrec client start does not offer)."""
        self.new_key(name)
        state = self.root / name
        state.mkdir(mode=0o700)
        self.devices[name] = state
        command = supernode_command(self.fleet, self.certs / "ca.crt", self.certs / "supernodes" / name,
                                    client_file(self.data, index), state, "cpu", False, free_port())
        at = command.index("--node-config") + 1
        command[at] = f"{command[at]} {extra_node_config}"
        env = {**flower_environment(state / "flwr", state / "ray"), **env_extra}
        with (state / "supernode.log").open("ab") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True, cwd=state)
        write_pid_file(state / "supernode.pid", process.pid)
        return process.pid

    def run_config(self, name: str, **overrides) -> dict:
        config = RunConfig(
            dataset="deployment", catalogue=str(self.data / CATALOGUE_FILE), out_dir=str(run_directory(self.server_state, name)),
            executor="cohort", rounds=2, eval_every=2, checkpoint_every=1, min_nodes=2, round_timeout=60.0,
        )
        values = config.to_user_config()
        values.update({key.replace("_", "-"): value for key, value in overrides.items()})
        RunConfig.from_user_config(values)  # a misspelt key fails here, not in flwr run
        return values

    def run(self, name: str, timeout_s: float = 420, app_dir: Path | None = None, **overrides) -> tuple[int, Path]:
        config = self.run_config(name, **overrides)
        run_dir = Path(config["out-dir"])
        code = submit_run(self.server_state, config, run_dir.with_suffix(".log"), timeout_s=timeout_s, app_dir=app_dir)
        return code, run_dir

    def run_in_background(self, name: str, timeout_s: float = 420,
                          **overrides) -> tuple[threading.Thread, dict, Path]:
        result: dict = {}
        config = self.run_config(name, **overrides)
        run_dir = Path(config["out-dir"])

        def target() -> None:
            try:
                result["code"] = submit_run(self.server_state, config, run_dir.with_suffix(".log"),
                                            timeout_s=timeout_s)
            except BaseException as err:  # reported by the test
                result["error"] = err

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread, result, run_dir

    def close(self) -> None:
        for state in self.devices.values():
            stop_client(state, grace_s=5)
        stop_server(self.server_state, grace_s=5)


def rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate, timeout_s: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def kill_group(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)
