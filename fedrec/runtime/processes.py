"""Starting and stopping Flower's processes: ports, environment, process groups, PID files.

Used by ``fedrec simulate`` (a private SuperLink per call) and by ``fedrec server`` /
``fedrec client`` (a SuperLink or SuperNode that outlives the command). Every process is
started in its own session, so it and its children (Flower's SuperExec, the apps, Ray)
are stopped together by the process group of the PID we started — never by name.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


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


def console_script(name: str) -> str:
    """A console script of this interpreter's environment (falls back to PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def wait_for_port(port: int, process: subprocess.Popen, log_path: Path, name: str, timeout_s: float,
                  host: str = "127.0.0.1") -> None:
    """Wait until ``host:port`` accepts connections; raise if ``process`` exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}; see {log_path}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not open port {port} in {timeout_s:.0f}s; see {log_path}")


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


def write_pid_file(path: Path, pid: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, path)


def read_pid_file(path: Path) -> int | None:
    """The PID in ``path`` if that process is still alive, else None."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return status != "Z"
    except OSError:
        return True


def stop_group_by_pid(pid: int, grace_s: float = 15.0) -> bool:
    """SIGTERM the process group led by ``pid`` (a session we started), then SIGKILL; True if it ran."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def pids_with_environ(marker: str) -> set[int]:
    """Live (non-zombie) PIDs whose environment contains ``marker`` (e.g. ``FLWR_HOME=/dir``).

    What we start carries its FLWR_HOME in its environment, and so do its children; tests
    use this to prove that nothing they started outlives them.
    """
    needle = marker.encode()
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if needle in environ and "State:\tZ" not in status:
            pids.add(int(entry.name))
    return pids
