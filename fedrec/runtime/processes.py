"""Starting and stopping Flower's processes: ports, environment, process groups, PID files.

Used by ``fedrec simulate`` (a private SuperLink per call) and by ``fedrec server`` /
``fedrec client`` (a SuperLink or SuperNode that outlives the command). Every process is
started in its own session, so it and its children (Flower's SuperExec, the apps, Ray)
are stopped together by the process group of the PID we started — never by name.
"""

from __future__ import annotations

import errno
import os
import random
import re
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


PORT_IN_USE = "already in use"
KILL_WAIT_S = 5.0


def bind_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host:port`` now (:data:`PORT_IN_USE`, ...), or None if it could.

    Binds with SO_REUSEADDR, as servers do, so a port in TIME_WAIT counts as free while
    one that another process listens on does not.
    """
    host = host.strip("[]")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        return f"cannot resolve {host!r} ({err.strerror})"
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return PORT_IN_USE
            return err.strerror or str(err)
    return None


def lasting_bind_problem(host: str, port: int, wait_s: float) -> str | None:
    """:func:`bind_problem`, where a port in use gets up to ``wait_s`` seconds to be released.

    A server killed a moment ago still holds its ports while its last threads exit.
    """
    deadline = time.monotonic() + wait_s
    while (problem := bind_problem(host, port)) == PORT_IN_USE and time.monotonic() < deadline:
        time.sleep(0.2)
    return problem


def group_listening_ports(pgid: int) -> set[int] | None:
    """TCP ports that processes of process group ``pgid`` listen on; None where /proc cannot tell."""
    inodes = _group_socket_inodes(pgid)
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            if table.endswith("tcp"):
                return None
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def group_members(pgid: int) -> list[int]:
    """PIDs of the processes of process group ``pgid`` that have not exited (zombies excluded)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _group_socket_inodes(pgid: int) -> set[str]:
    """Inodes of the sockets that the live processes of process group ``pgid`` hold open."""
    inodes: set[str] = set()
    for pid in group_members(pgid):
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes.update(link[8:-1] for link in links if link.startswith("socket:["))
    return inodes


def _port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until_listening(process: subprocess.Popen, ports: list[int], log_path: Path, log_offset: int,
                         name: str, timeout_s: float) -> None:
    """Wait until ``process`` (the leader of its own process group) listens on every one of ``ports``.

    A port counts only when a process of that group holds the listening socket (read from
    /proc; where /proc cannot tell, when 127.0.0.1:port accepts a connection), so a
    foreign listener on the same port is never mistaken for ours. Raises RuntimeError,
    naming the problem lines that ``process`` logged after ``log_offset``, when it exits
    first or time runs out.
    """
    deadline = time.monotonic() + timeout_s
    missing = list(ports)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} before listening on port(s) "
                               f"{_ports(missing)}{_log_problems(log_path, log_offset)}; see {log_path}")
        owned = group_listening_ports(process.pid)
        missing = [port for port in ports if not (port in owned if owned is not None else _port_accepts(port))]
        if not missing:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not listen on port(s) {_ports(missing)} within {timeout_s:.0f} s"
                       f"{_log_problems(log_path, log_offset)}; see {log_path}")


def _ports(ports: list[int]) -> str:
    return ", ".join(map(str, ports))


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PROBLEM = re.compile(r"error|exception|in use|fail|denied|cannot|could not|not found|invalid|no such", re.I)


def log_problems(log_path: Path, offset: int = 0, limit: int = 3) -> list[str]:
    """The last ``limit`` lines written to ``log_path`` after byte ``offset`` that name a problem.

    Colour codes are removed and whitespace collapsed; where no line names a problem, the
    last non-empty line is returned (if any).
    """
    try:
        with log_path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    lines = [" ".join(_ANSI.sub("", line).split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    problems = [line for line in lines if _PROBLEM.search(line)]
    return (problems or lines[-1:])[-limit:]


def _log_problems(log_path: Path, offset: int) -> str:
    lines = log_problems(log_path, offset)
    return f": {' | '.join(line.rstrip('.') for line in lines)}" if lines else ""


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
    """SIGTERM the process group led by ``pid`` (a session we started), then SIGKILL; True if it ran.

    Returns once no process of the group is left (or after :data:`KILL_WAIT_S` more seconds).
    """
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
    deadline = time.monotonic() + KILL_WAIT_S  # a killed process takes a moment to be gone
    while time.monotonic() < deadline and group_members(pid):
        time.sleep(0.05)
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
