"""``fedrec simulate``: a federated simulation, one Flower node per user, on Ray.

Starts a private Flower runtime (:mod:`fedrec.simulations.flower_runtime`), submits
the run with ``flwr run``, shows progress by following ``metrics.jsonl`` as the
ServerApp writes it, and stops every process it started when done or on error.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fedrec.core.config.protocols import apply_protocol
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import leave_one_out
from fedrec.core.privacy.plan import preflight
from fedrec.core.run_files import METRICS_FILE, SUMMARY_FILE, read_jsonl
from fedrec.server.checkpoint import checkpointed_config
from fedrec.simulations.flower_runtime import ray_failed_to_start, simulation_runtime

FLOWER_LOG = "flower.log"
# Ray's head node sometimes fails to start its GCS server (the server exits before it
# writes a log line; seen in about one start in ten on a busy 2-core machine, three in a
# row once in CI). No round has run then, so a fresh runtime after a pause is safe.
RUNTIME_START_ATTEMPTS = 5
RUNTIME_RETRY_PAUSE_S = 5.0
CONFIG_FILE = "run_config.json"


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> RunConfig:
    """The config of a checkpointed run, with ``overrides`` (e.g. more rounds) applied."""
    config = RunConfig.from_user_config(checkpointed_config(run_dir, overrides))
    if config.dp in ("record", "user-local"):
        raise ValueError(f"cannot resume {run_dir}: under dp {config.dp} each client keeps its own accountant "
                         "in the simulated node's state, which ended with the previous run; resuming would "
                         "restart every client's ε from zero")
    return config


def simulate(config: RunConfig, out_dir: Path, cpus_per_client: int = 1, show_progress: bool = True,
             timeout_s: float | None = None, ray_address: str = "") -> dict[str, Any]:
    """Run a federated simulation and return its ``summary.json`` content.

    ``ray_address`` (``HOST:PORT`` of a cluster's head started with ``ray start --head``)
    runs the simulated nodes on that Ray cluster instead of a private one-machine Ray.
    """
    if ray_address:
        _check_ray_address(ray_address)
    out_dir = out_dir.expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    config = replace(config, out_dir=str(out_dir))
    if not config.resume:
        for stale in (METRICS_FILE, SUMMARY_FILE):
            if (out_dir / stale).exists():
                raise FileExistsError(
                    f"{out_dir} already holds a run ({stale}); choose another --out or use --resume"
                )
    else:  # the summary of the earlier, shorter run is no longer the run's result
        (out_dir / SUMMARY_FILE).unlink(missing_ok=True)
    data = load_dataset(config.dataset, config.data_dir, config.seed)
    n_users = data.n_users
    config = apply_protocol(config, n_users)  # protocol ncf-loo: every user in every round, …
    if config.clients_per_round > n_users and config.protocol == "none":
        print(f"note: clients-per-round {config.clients_per_round} is more than the {n_users} users of "
              f"{config.dataset}: every user trains in every round", flush=True)
    # refuse a DP configuration the data makes meaningless before anything starts
    privacy_line = preflight(config, leave_one_out(data, seed=config.seed, eval_negatives=config.eval_negatives))
    print(privacy_line, flush=True)
    # per-client: one simulated node per user; cohort: a few nodes, each holding many users
    n_nodes = n_users if config.executor == "per-client" else min(config.cohort_nodes, n_users)
    (out_dir / CONFIG_FILE).write_text(json.dumps(config.to_user_config(), indent=2, sort_keys=True))

    started = time.perf_counter()
    for attempt in range(1, RUNTIME_START_ATTEMPTS + 1):
        log_offset = (out_dir / FLOWER_LOG).stat().st_size if (out_dir / FLOWER_LOG).exists() else 0
        rows_before = _row_count(out_dir / METRICS_FILE)
        returncode = _run_once(config, out_dir, n_nodes, cpus_per_client, show_progress, started, timeout_s,
                               attempt, log_offset, ray_address)
        if attempt == RUNTIME_START_ATTEMPTS or (out_dir / SUMMARY_FILE).is_file():
            break
        log_text = _attempt_log(out_dir / FLOWER_LOG, log_offset)
        if ray_failed_to_start(log_text):
            reason = "Ray's head node failed to start"
        elif _row_count(out_dir / METRICS_FILE) == rows_before and not _has_error(log_text):
            # seen once at 100k users: the run ended during the ServerApp's set-up, before any
            # round, with no error logged (the SuperLink stopped hearing from the simulation)
            reason = "the simulation ended before its first round without an error"
        else:
            break
        print(f"{reason} (attempt {attempt} of {RUNTIME_START_ATTEMPTS}); "
              f"starting a fresh runtime in {RUNTIME_RETRY_PAUSE_S:.0f} s")
        time.sleep(RUNTIME_RETRY_PAUSE_S)
    summary_path = out_dir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    # `flwr run --stream` exits 0 even when the simulation crashed: judge by the summary
    if summary.get("rounds") != config.rounds:
        raise RuntimeError(
            f"the simulation did not finish (flwr run exit code {returncode}); "
            f"see {out_dir / FLOWER_LOG} and {out_dir / 'superlink.log'}"
        )
    return summary


def _check_ray_address(address: str) -> None:
    """Fail fast when nothing listens at a Ray head's ``HOST:PORT`` (ray.init would wait minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--ray-address must be HOST:PORT of a Ray head (ray start --head --port PORT), got {address!r}")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as err:
        raise ValueError(f"no Ray cluster answers at {address} ({err}); start one with "
                         f"`ray start --head --node-ip-address {host} --port {port}`") from err


def _run_once(config: RunConfig, out_dir: Path, n_nodes: int, cpus_per_client: int, show_progress: bool,
              started: float, timeout_s: float | None, attempt: int, log_offset: int,
              ray_address: str = "") -> int:
    """One private runtime, one ``flwr run``; returns its exit code (0 even on a crash)."""
    with simulation_runtime(out_dir, ray_address) as runtime:
        command = runtime.flwr_run_command(config.to_user_config(), n_nodes, cpus_per_client,
                                           gpus_per_client=_gpu_share(config, n_nodes))
        with (out_dir / FLOWER_LOG).open("ab") as log:
            process = subprocess.Popen(command, env=runtime.env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, cwd=runtime.root, start_new_session=True)
            try:
                _follow(process, out_dir, config, show_progress, started, timeout_s)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if ray_failed_to_start(_attempt_log(out_dir / FLOWER_LOG, log_offset)):
            runtime.stop()  # Ray's processes flush their logs when stopped
            kept = runtime.keep_ray_logs(out_dir / "ray-logs" / f"attempt-{attempt}")
            print(f"Ray failed to start; {kept} of its log files kept in {out_dir / 'ray-logs'}")
    return int(process.returncode)


def _gpu_share(config: RunConfig, n_nodes: int) -> float:
    """Each cohort node's share of the GPU when the run asks for CUDA (0: CPU only)."""
    if config.executor != "cohort" or config.device == "cpu":
        return 0.0
    import torch

    if not torch.cuda.is_available():
        if config.device == "cuda":
            raise ValueError("device 'cuda' was asked for but this machine shows no CUDA GPU")
        return 0.0
    return 1.0 / n_nodes


def _row_count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _attempt_log(log_path: Path, offset: int) -> str:
    """The part of the Flower log written by this attempt (from byte ``offset``)."""
    if not log_path.exists():
        return ""
    with log_path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode("utf-8", errors="replace")


def _has_error(log_text: str) -> bool:
    return "Traceback" in log_text or "ERROR" in log_text


def _follow(process: subprocess.Popen, out_dir: Path, config: RunConfig, show_progress: bool,
            started: float, timeout_s: float | None) -> None:
    """Wait for ``flwr run`` to end, showing rounds as they land in ``metrics.jsonl``."""
    metrics_path = out_dir / METRICS_FILE
    summary_path = out_dir / SUMMARY_FILE
    k = config.eval_k
    with Progress(
        TextColumn("[bold]round {task.completed}/{task.total}"), BarColumn(),
        TextColumn("{task.description}"), TimeElapsedColumn(), disable=not show_progress,
    ) as progress:
        task = progress.add_task("starting Flower…", total=config.rounds)
        while True:
            rows = read_jsonl(metrics_path)
            if rows:
                last = rows[-1]
                evaluated = [r for r in rows if f"hr@{k}" in r or "rmse" in r]
                text = f"loss {last.get('train_loss') or 0:.4f}"
                if evaluated and "rmse" in evaluated[-1]:
                    text += f"  RMSE {evaluated[-1]['rmse']:.4f}  MAE {evaluated[-1]['mae']:.4f}"
                elif evaluated:
                    text += f"  HR@{k} {evaluated[-1][f'hr@{k}']:.4f}  NDCG@{k} {evaluated[-1][f'ndcg@{k}']:.4f}"
                progress.update(task, completed=int(last["round"]), description=text)
            if process.poll() is not None:
                break
            if summary_path.exists() and int(rows[-1]["round"] if rows else 0) >= config.rounds:
                # the ServerApp is done; give `flwr run --stream` a moment to notice
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                break
            if timeout_s is not None and time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"simulation exceeded {timeout_s:.0f}s; see {out_dir / FLOWER_LOG}")
            time.sleep(0.5)
