"""A private Ray head node for one simulation, with only the processes the simulation uses.

Flower's simulation engine (``flwr-simulation``, started by the SuperLink) calls
``ray.init(include_dashboard=False, ...)``, which starts a whole head node from inside
that process: the GCS server, the autoscaler's monitor, the dashboard's API server
(``dashboard.py``: Ray starts it even with ``include_dashboard=False``, minus the web UI),
the log monitor and the raylet, which starts the dashboard agent and the runtime-env
agent. None of this can be changed through Flower (its federation config passes only
``num_cpus``, ``num_gpus``, ``logging_level`` and ``log_to_driver``), but Flower joins a
running cluster when ``RAY_ADDRESS`` is set. So :func:`main` starts the head node itself,
in a fresh process, and the simulation joins it:

* no dashboard (``dashboard.py`` is never started) and no autoscaler monitor;
* kept: the GCS server, the raylet and the two agents the raylet will not run without
  (its command line must name both; the runtime-env agent sets up Flower's actors'
  ``runtime_env``), and the log monitor (it forwards the ClientApp actors' output to
  Flower's log);
* the GCS on a given port, and workers on ports the kernel picks (not Ray's
  fixed 10002–19999 range, which concurrent clusters share).

Why a fresh process: Ray forks its daemons with a ``preexec_fn``; forked from a process
whose gRPC threads are busy (``flwr-simulation`` is), gRPC's fork handlers restart its
threads in the child, which then crashes (SIGSEGV or SIGABRT) before it execs the GCS
server or the raylet — the head node "fails to start" without a log line. That is also
why :data:`GRPC_NO_FORK_SUPPORT` is in the environment of everything the runtime starts.

    python -m fedrec.simulations.ray_cluster --temp-dir DIR --port PORT --ready-file FILE

It writes ``FILE`` (JSON: the address and the PIDs of the processes it started) once the
raylet has registered, then waits for SIGTERM (or for its parent to exit) and stops
them. When the head node cannot start, it prints which of its processes exited and how
(e.g. ``raylet (pid 123): signal SIGABRT``) and exits with code 1 — as soon as the GCS
server or the raylet has died, not after Ray's own 30 s timeouts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

# gRPC's fork support restarts gRPC's threads in a forked child; in a child that execs at
# once (every Ray daemon) that only risks a crash. "0" turns it off, for both gRPC copies
# (grpcio's and the one inside Ray).
GRPC_NO_FORK_SUPPORT = {"GRPC_ENABLE_FORK_SUPPORT": "0"}
# the head's log, beside Ray's session folders (kept with them when the start fails)
HEAD_LOG = "ray-head.log"
# the processes the head node starts (Ray's process types); the raylet starts the agents
HEAD_PROCESSES = ("gcs_server", "log_monitor", "raylet")
STARTED_BY_RAYLET = ("dashboard_agent", "runtime_env_agent")
NOT_STARTED = ("dashboard", "monitor")  # the API server (dashboard.py) and the autoscaler
# how the lines that sum up a failed start begin (read back by flower_runtime)
HEAD_FAILURE_LINES = ("Ray's head node failed", "its processes:")


def head_params(temp_dir: Path, gcs_port: int) -> dict[str, Any]:
    """The ``RayParams`` of the private head node (see the module's doc).

    No node IP: Ray picks the machine's, as it does for ``ray.init()``; a driver given
    ``127.0.0.1:PORT`` turns it into that IP too.
    """
    return {
        "gcs_server_port": gcs_port,
        "temp_dir": str(temp_dir),
        "include_dashboard": False,
        "no_monitor": True,
        "include_log_monitor": True,
        # 0: each worker binds a port the kernel picks, so concurrent clusters cannot collide
        "min_worker_port": 0,
        "max_worker_port": 0,
    }


def signal_name(returncode: int | None) -> str:
    """How a process ended, in words: ``running``, ``exit code 1``, ``signal SIGABRT``."""
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def _started_processes(services: Any) -> list[tuple[str, Any]]:
    """Record every process Ray starts here (type, Popen), so a failed start can say how each ended."""
    started: list[tuple[str, Any]] = []
    original = services.start_ray_process

    def start_ray_process(command: list[str], process_type: str, *args: Any, **kwargs: Any) -> Any:
        info = original(command, process_type, *args, **kwargs)
        started.append((process_type, info.process))
        return info

    services.start_ray_process = start_ray_process
    return started


def _skip_api_server(node_class: Any) -> None:
    """Ray starts its dashboard's API server for every head node, even without a dashboard; skip it.

    (Nothing here uses it: no jobs API, no state API, no web UI; the driver does not need it.)
    """
    if hasattr(node_class, "start_api_server"):
        node_class.start_api_server = lambda self, **kwargs: None


def _report(started: list[tuple[str, Any]]) -> str:
    return "; ".join(f"{kind} (pid {process.pid}): {signal_name(process.poll())}" for kind, process in started)


def _fail_fast(started: list[tuple[str, Any]], began: float, up: threading.Event) -> None:
    """Until ``up`` is set: when the GCS server or the raylet has exited, say so and exit (code 1).

    Ray itself notices only after its own timeouts (about 30 s for either) and then often
    names the wrong cause; a retry on a fresh head node is quicker.
    """
    while not up.wait(0.2):
        dead = [(kind, process) for kind, process in list(started)
                if kind in HEAD_PROCESSES and process.poll() is not None]
        if dead and not up.is_set():
            kind, process = dead[0]
            print(f"{HEAD_FAILURE_LINES[0]} to start after {time.monotonic() - began:.1f} s: {kind} "
                  f"(pid {process.pid}) ended during the start ({signal_name(process.returncode)})", flush=True)
            print(f"{HEAD_FAILURE_LINES[1]} {_report(started)}", flush=True)
            for _, other in started:
                if other.poll() is None:
                    other.kill()
            os._exit(1)


def _wait_for_stop(parent: int, node: Any, started: list[tuple[str, Any]]) -> None:
    """Return on SIGTERM/SIGINT or when the parent process has gone; log a daemon's death."""
    stop = {"now": False}

    def _stop(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    reported: set[int] = set()
    while not stop["now"] and os.getppid() == parent:
        for kind, process in started:
            if process.pid not in reported and process.poll() is not None and kind in HEAD_PROCESSES:
                reported.add(process.pid)
                print(f"{kind} (pid {process.pid}) ended: {signal_name(process.returncode)}", flush=True)
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a private Ray head node for one simulation")
    parser.add_argument("--temp-dir", type=Path, required=True, help="Ray's temp folder (sessions, logs, sockets)")
    parser.add_argument("--port", type=int, required=True, help="the GCS server's port")
    parser.add_argument("--ready-file", type=Path, required=True, help="written once the head node is up")
    args = parser.parse_args(argv)
    parent = os.getppid()
    os.environ.update(GRPC_NO_FORK_SUPPORT)  # before Ray's gRPC starts

    import ray._private.node as ray_node
    import ray._private.parameter as ray_parameter
    import ray._private.services as services

    started = _started_processes(services)
    _skip_api_server(ray_node.Node)
    began = time.monotonic()
    up = threading.Event()
    threading.Thread(target=_fail_fast, args=(started, began, up), daemon=True).start()
    try:
        params = ray_parameter.RayParams(**head_params(args.temp_dir, args.port))
        node = ray_node.Node(params, head=True, shutdown_at_exit=False, spawn_reaper=False)
        up.set()
    except BaseException as err:
        up.set()  # noqa: BLE001  (any failure: say how Ray's processes ended)
        time.sleep(0.5)  # a crashing process needs a moment to be reaped
        print(f"{HEAD_FAILURE_LINES[0]} to start after {time.monotonic() - began:.1f} s: "
              f"{type(err).__name__}: {err}", flush=True)
        print(f"{HEAD_FAILURE_LINES[1]} {_report(started) or 'none started'}", flush=True)
        traceback.print_exc()
        for _, process in started:
            if process.poll() is None:
                process.kill()
        return 1
    ready = {"address": node.gcs_address, "seconds": round(time.monotonic() - began, 2),
             "processes": {kind: process.pid for kind, process in started}}
    tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
    tmp.write_text(json.dumps(ready))
    os.replace(tmp, args.ready_file)
    print(f"Ray's head node is up at {node.gcs_address} after {ready['seconds']} s: {_report(started)}", flush=True)
    try:
        _wait_for_stop(parent, node, started)
    finally:
        node.kill_all_processes(check_alive=False, allow_graceful=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
