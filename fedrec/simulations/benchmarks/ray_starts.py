"""How reliably Ray's head node starts: N consecutive short simulations, retries and failures counted.

Each start is one ``fedrec simulate`` call (in this process) of a tiny synthetic run
(``--users`` users, 2 cohort nodes, 1 round): a private SuperLink, ``flwr run``, Ray
started by Flower's simulation engine, one round, everything stopped. Per start it
records:

* ``seconds`` — the whole call (checking the data, the runtime, Ray, one round, clean-up);
* ``ray_start_s`` — from the first Ray process (the GCS server) of the attempt that
  worked to its first worker process: Ray's own start-up (sampled every 0.2 s);
* ``attempts`` — 1, or more when ``simulate`` retried on a fresh runtime (the reason is
  kept: Ray's head node failed to start, or the run ended before its first round);
* ``failed`` — the error when even the last attempt failed (its logs are moved below
  ``--out``);
* ``processes`` — the programs of the runtime's process group seen during the start
  (``dashboard.py``, ``agent.py``, ``raylet``, ``default_worker.py`` …).

Ray's logs of every failed attempt (``ray-logs/attempt-K`` of the run) are copied to
``--out/start-NNN-ray-logs``. Results go to ``--out/ray_starts.jsonl`` (one line per
start, written as it ends) and ``--out/ray_starts.json`` (summary).

    python -m fedrec.simulations.benchmarks.ray_starts --starts 50 --out runs/ray-starts

To load the machine meanwhile, start a busy loop yourself and stop it by its PID, e.g.
``python -c 'while True: pass' & LOAD=$!`` … ``kill $LOAD``.

Measured results: see the closing note of the issue that added it (and the README).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# a retry, as simulate prints it ("REASON (attempt K of N); starting a fresh runtime in 5 s") or
# as the runtime does ("Ray's head node failed to start (attempt K of N): DETAIL; … starting a fresh head node")
RETRY_LINE = re.compile(r"^(?P<reason>.+?) \(attempt (?P<attempt>\d+) of \d+\)(?P<detail>.*?);? starting a fresh",
                        re.M)
# what a process is called in the report: the script a Python process runs, else the program
_SCRIPT = re.compile(r"[^/\s]+\.py\b")


def process_name(cmdline: list[str]) -> str:
    """A short name of a process from its ``/proc/PID/cmdline`` arguments.

    ``python …/ray/dashboard/agent.py --x`` → ``agent.py``; ``…/bin/flwr run …`` → ``flwr``;
    ``…/raylet --a`` → ``raylet``.
    """
    if not cmdline:
        return "?"
    program = Path(cmdline[0]).name
    if program.startswith("python"):
        for arg in cmdline[1:]:
            if arg == "-m":
                continue
            if not arg.startswith("-"):
                match = _SCRIPT.search(Path(arg).name)
                return match.group(0) if match else Path(arg).name
        return program
    return program


WORKER = "ray worker"


def _better_name(known: str, cmdline: list[str]) -> str:
    """The name of a process seen again: a fork takes the name of the program it execs, and Ray's
    processes rename themselves once started (``ray::IDLE``, ``ray::DashboardAgent``), which is kept."""
    name = process_name(cmdline)
    if name.startswith("ray::"):
        agent = name.removeprefix("ray::")
        return name if agent.endswith("Agent") else WORKER
    if known.startswith("ray::") or known == WORKER:
        return known
    return WORKER if name in ("default_worker.py", "setup_worker.py") else name


class ProcessWatch:
    """Samples the processes of this benchmark's runtimes (recognised by their FLWR_HOME)."""

    def __init__(self, runtime_parent: Path, interval_s: float = 0.2) -> None:
        self.marker = f"FLWR_HOME={runtime_parent}/".encode()
        self.interval_s = interval_s
        self.seen: dict[int, tuple[float, str]] = {}  # pid -> (first seen, name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ProcessWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        now = time.perf_counter()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            known = self.seen.get(pid)
            # a process is named again for a few seconds: a fork shows its parent's name until it execs
            if known is not None and now - known[0] > 3.0:
                continue
            try:
                if known is None and self.marker not in (entry / "environ").read_bytes():
                    continue
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            args = [part.decode(errors="replace") for part in cmdline if part]
            if args:
                self.seen[pid] = (known[0] if known else now, _better_name(known[1] if known else "", args))

    def since(self, started: float) -> list[tuple[float, str]]:
        """(seconds after ``started``, name) of the processes first seen after ``started``, by time."""
        return sorted((t - started, name) for t, name in list(self.seen.values()) if t >= started)


def ray_start_seconds(events: list[tuple[float, str]]) -> float | None:
    """From the last GCS server started before the first worker to that worker (None: no worker)."""
    first_worker = next((t for t, name in events if name == WORKER), None)
    if first_worker is None:
        return None
    gcs = [t for t, name in events if name == "gcs_server" and t <= first_worker]
    return round(first_worker - gcs[-1], 2) if gcs else None


class _Tee(io.TextIOBase):
    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)


def one_start(index: int, out: Path, runtime_parent: Path, watch: ProcessWatch, users: int,
              timeout_s: float) -> dict[str, Any]:
    from fedrec.core.config.run_config import RunConfig
    from fedrec.simulations.flower_runtime import Terminated
    from fedrec.simulations.simulate import RAY_LOGS, simulate

    run_dir = out / f"start-{index:03d}"
    config = RunConfig(dataset=f"synthetic-{users}", rounds=1, clients_per_round=users, dim=8, eval_every=1,
                       executor="cohort", cohort_nodes=2, seed=index)
    captured = io.StringIO()
    started = time.perf_counter()
    error = ""
    try:
        with contextlib.redirect_stdout(_Tee(captured, sys.stdout)):
            simulate(config, run_dir, show_progress=False, timeout_s=timeout_s, warn=lambda message: None)
    except Terminated:  # the benchmark itself was told to stop
        raise
    except Exception as err:  # noqa: BLE001  (any other failure is a result here)
        error = f"{type(err).__name__}: {err}"
    seconds = time.perf_counter() - started
    watch.sample()
    events = watch.since(started)
    retries = [{"attempt": int(m["attempt"]), "reason": m["reason"].strip(), "detail": m["detail"].strip(" :;")}
               for m in RETRY_LINE.finditer(captured.getvalue())]
    kept = []
    for logs in (run_dir / RAY_LOGS, *runtime_parent.glob(f"fedrec-failed-{run_dir.name}-*/{RAY_LOGS}")):
        if logs.is_dir():
            destination = out / f"{run_dir.name}-ray-logs"
            shutil.copytree(logs, destination, dirs_exist_ok=True)
            kept.append(str(destination))
    if retries or error:  # keep what Flower logged about it too
        for name in ("flower.log", "superlink.log"):
            if (run_dir / name).is_file():
                (out / f"{run_dir.name}-logs").mkdir(exist_ok=True)
                shutil.copy2(run_dir / name, out / f"{run_dir.name}-logs" / name)
    for failed in runtime_parent.glob(f"fedrec-failed-{run_dir.name}-*"):
        shutil.move(str(failed), out / failed.name)
    names: dict[str, int] = {}
    for _, name in events:
        names[name] = names.get(name, 0) + 1
    result = {
        "start": index, "seconds": round(seconds, 2), "ray_start_s": ray_start_seconds(events),
        "attempts": len(retries) + 1, "retries": retries, "failed": error, "ray_logs": kept,
        "processes": dict(sorted(names.items())),
    }
    shutil.rmtree(run_dir, ignore_errors=True)  # the start is measured; only its logs matter
    return result


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [r["seconds"] for r in results if not r["failed"]]
    ray_seconds = [r["ray_start_s"] for r in results if r["ray_start_s"] is not None]

    def stats(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"median": None, "min": None, "max": None}
        return {"median": round(statistics.median(values), 2), "min": min(values), "max": max(values)}

    processes: dict[str, int] = {}
    for r in results:
        for name, count in r["processes"].items():
            processes[name] = processes.get(name, 0) + count
    return {
        "starts": len(results),
        "retried": sum(r["attempts"] > 1 for r in results),
        "failed": sum(bool(r["failed"]) for r in results),
        "retry_reasons": sorted({x["reason"] for r in results for x in r["retries"]}),
        "seconds": stats(seconds),
        "ray_start_s": stats(ray_seconds),
        "processes_seen": dict(sorted(processes.items())),
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=50, help="consecutive simulation starts")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results and kept logs")
    parser.add_argument("--users", type=int, default=20, help="users of the tiny synthetic dataset")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="per start")
    args = parser.parse_args(argv)
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    from fedrec.simulations.flower_runtime import RUNTIME_PARENT_ENV

    own_parent = not os.environ.get(RUNTIME_PARENT_ENV)
    # short, below /tmp: Ray's socket paths below it are length-limited
    runtime_parent = Path(os.environ.get(RUNTIME_PARENT_ENV) or tempfile.mkdtemp(prefix="frb-", dir="/tmp"))
    os.environ[RUNTIME_PARENT_ENV] = str(runtime_parent)
    for name, value in (("FLWR_HOME", runtime_parent / "flwr-home"), ("RAY_TMPDIR", runtime_parent / "ray-tmp"),
                        ("FLWR_TELEMETRY_ENABLED", "0"), ("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1"),
                        ("FLWR_DISABLE_UPDATE_CHECK", "1"), ("RAY_USAGE_STATS_ENABLED", "0")):
        os.environ.setdefault(name, str(value))
    results: list[dict[str, Any]] = []
    try:
        with ProcessWatch(runtime_parent) as watch, (out / "ray_starts.jsonl").open("w") as lines:
            for index in range(1, args.starts + 1):
                result = one_start(index, out, runtime_parent, watch, args.users, args.timeout_s)
                results.append(result)
                lines.write(json.dumps(result) + "\n")
                lines.flush()
                print(f"start {index}/{args.starts}: {result['seconds']:.1f} s, Ray {result['ray_start_s']} s, "
                      f"attempts {result['attempts']}{', FAILED: ' + result['failed'] if result['failed'] else ''}",
                      flush=True)
    finally:
        summary = summarise(results)
        (out / "ray_starts.json").write_text(json.dumps({"summary": summary, "starts": results}, indent=2))
        if own_parent:
            shutil.rmtree(runtime_parent, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
