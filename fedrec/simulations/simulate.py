"""``fedrec simulate``: a federated simulation, one Flower node per user, on Ray.

Checks the data in this process first (:func:`check_data`: a run in which nobody can be
evaluated is refused before any runtime starts), then starts a private Flower runtime
(:mod:`fedrec.simulations.flower_runtime`), submits the run with ``flwr run``, shows
progress by following ``metrics.jsonl`` as the ServerApp writes it, and stops every
process it started when done or on error.

A run that fails leaves its run directory resumable (it holds a checkpoint that
``--resume`` continues) or as it was: a directory the run created is removed (its logs
are moved to a temporary folder, named in the error) and files it added to an existing
one are deleted, so the same command can be run again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fedrec.core.config.protocols import apply_protocol
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.coverage import UserCoverage, name_users
from fedrec.core.data.loaders import load_dataset
from fedrec.core.data.split import NO_ITEM, leave_one_out
from fedrec.core.evaluation.divergence import divergence_warning, loss_series
from fedrec.core.families.base import ModelFamily
from fedrec.core.families.registry import family_of
from fedrec.core.privacy.distributed_mode import FLOWER_REFUSAL
from fedrec.core.privacy.plan import preflight
from fedrec.core.run_files import METRICS_FILE, SUMMARY_FILE
from fedrec.reporting.progress import progress_text, read_complete_rows
from fedrec.server.checkpoint import CHECKPOINT_DIR, STATE_FILE, checkpointed_config
from fedrec.simulations.flower_runtime import RUNTIME_PARENT_ENV, ray_failed_to_start, simulation_runtime

FLOWER_LOG = "flower.log"
# Ray's head node sometimes fails to start its GCS server (the server exits before it
# writes a log line; seen in about one start in ten on a busy 2-core machine, three in a
# row once in CI). No round has run then, so a fresh runtime after a pause is safe.
RUNTIME_START_ATTEMPTS = 5
RUNTIME_RETRY_PAUSE_S = 5.0
CONFIG_FILE = "run_config.json"
SUPERLINK_LOG = "superlink.log"
RAY_LOGS = "ray-logs"
RUN_LOGS = (FLOWER_LOG, SUPERLINK_LOG, RAY_LOGS)  # what a failed run keeps (they block no rerun)
# the dp modes whose runs cannot be resumed in simulation (see resume_config)
UNRESUMABLE_DP = ("record", "user-local")


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> RunConfig:
    """The config of a checkpointed run, with ``overrides`` (e.g. more rounds) applied."""
    config = RunConfig.from_user_config(checkpointed_config(run_dir, overrides))
    if config.dp in UNRESUMABLE_DP:
        raise ValueError(f"cannot resume {run_dir}: under dp {config.dp} each client keeps its own accountant "
                         "in the simulated node's state, which ended with the previous run; resuming would "
                         "restart every client's ε from zero")
    return config


def print_warning(message: str) -> None:
    """Print ``warning: message`` to stderr (the default of :func:`simulate`'s ``warn``)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def simulate(config: RunConfig, out_dir: Path, cpus_per_client: int = 1, show_progress: bool = True,
             timeout_s: float | None = None, ray_address: str = "",
             warn: Callable[[str], None] = print_warning) -> dict[str, Any]:
    """Run a federated simulation and return its ``summary.json`` content.

    ``ray_address`` (``HOST:PORT`` of a cluster's head started with ``ray start --head``)
    runs the simulated nodes on that Ray cluster instead of a private one-machine Ray.
    ``warn`` receives the warnings about the data (users the run cannot train or evaluate).
    Raises ``ValueError`` before anything is written or started when the run cannot work
    (a bad ``out_dir``, data nobody can be evaluated on, a meaningless DP set-up).
    """
    if config.dp == "user-distributed" and config.executor == "cohort":
        raise ValueError(FLOWER_REFUSAL)
    if config.dp == "record-distributed":
        from fedrec.core.federation.record_rounds import FLOWER_REFUSAL as RECORD_REFUSAL

        raise ValueError(RECORD_REFUSAL)
    if ray_address:
        _check_ray_address(ray_address)
    out_dir = out_dir.expanduser().resolve()
    check_out_dir(out_dir)
    config = replace(config, out_dir=str(out_dir))
    if not config.resume:
        _refuse_earlier_run(out_dir)
    data = load_dataset(config.dataset, config.data_dir, config.seed)
    n_users = data.n_users
    config = apply_protocol(config, n_users)  # protocol ncf-loo: every user in every round, …
    if config.clients_per_round > n_users and config.protocol == "none":
        print(f"note: clients-per-round {config.clients_per_round} is more than the {n_users} user(s) of "
              f"{config.dataset}: every user trains in every round", flush=True)
    check_data(config, warn)
    # refuse a DP configuration the data makes meaningless before anything starts
    privacy_line = preflight(config, leave_one_out(data, seed=config.seed, eval_negatives=config.eval_negatives))
    print(privacy_line, flush=True)
    # per-client: one simulated node per user; cohort: a few nodes, each holding many users
    n_nodes = n_users if config.executor == "per-client" else min(config.cohort_nodes, n_users)

    before = _entries(out_dir)
    _make_out_dir(out_dir)
    try:
        if config.resume:  # the summary of the earlier, shorter run is no longer the run's result
            (out_dir / SUMMARY_FILE).unlink(missing_ok=True)
        (out_dir / CONFIG_FILE).write_text(json.dumps(config.to_user_config(), indent=2, sort_keys=True))
        summary, returncode = _run_attempts(config, out_dir, n_nodes, cpus_per_client, show_progress, timeout_s,
                                            ray_address)
    except BaseException:
        try:
            print(f"note: {_after_failure(config, out_dir, before)}", file=sys.stderr, flush=True)
        except OSError as err:  # the run's own error matters more than a failed clean-up
            print(f"note: could not clean up {out_dir} ({err})", file=sys.stderr, flush=True)
        raise
    # `flwr run --stream` exits 0 even when the simulation crashed: judge by the summary
    if summary.get("rounds") != config.rounds:
        cause = _error_line(out_dir / FLOWER_LOG) or f"flwr run exit code {returncode}"
        raise RuntimeError(f"the simulation did not finish ({cause}); {_after_failure(config, out_dir, before)}")
    return summary


def _run_attempts(config: RunConfig, out_dir: Path, n_nodes: int, cpus_per_client: int, show_progress: bool,
                  timeout_s: float | None, ray_address: str) -> tuple[dict[str, Any], int]:
    """Run the simulation, on a fresh runtime again when Ray failed to start or the run ended
    before its first round; the summary (``{}`` when none was written) and ``flwr run``'s exit code."""
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
    return summary, returncode


# --- the data, checked before anything starts ---------------------------------------------


def check_data(config: RunConfig, warn: Callable[[str], None] = print_warning) -> UserCoverage:
    """Split ``config``'s data as the run will and say which users it cannot use.

    Warns (through ``warn``, naming the first few raw ids) about users without training
    data and users without a held-out test item; raises ``ValueError`` when no user can
    train, none can be evaluated, or ``model-selection best-validation`` finds no
    validation item: such a run would start Flower and fail at its end.
    """
    family = family_of(config.model)
    split = family.load_split(config)
    user_ids = load_dataset(config.dataset, config.data_dir, config.seed).user_ids
    coverage = split_coverage(family, split, user_ids)
    train_reason, test_reason = _too_few(split)
    none = "its only user lacks" if coverage.n_users == 1 else f"none of its {coverage.n_users} users has"
    if coverage.n_trainable == 0:
        raise ValueError(f"nothing to train on in {config.dataset}: {none} training data ({train_reason})")
    if coverage.n_evaluated == 0:
        raise ValueError(f"nothing to evaluate in {config.dataset}: {none} a held-out test item ({test_reason})")
    if config.model_selection == "best-validation" and coverage.n_validated == 0:
        raise ValueError(f"model-selection best-validation needs validation items: in {config.dataset} {none} "
                         "a validation item (a user needs at least 3 interactions: the latest is the test "
                         "item, the one before it the validation item)")
    of_users = f"of the {coverage.n_users} users of {config.dataset}"
    if coverage.n_untrainable:
        warn(f"{coverage.n_untrainable} {of_users} cannot train ({train_reason}): "
             f"{name_users(coverage.untrainable, coverage.n_untrainable)}")
    if coverage.n_unevaluated:
        warn(f"{coverage.n_unevaluated} {of_users} cannot be evaluated ({test_reason}); they are never "
             f"scored: {name_users(coverage.unevaluated, coverage.n_unevaluated)}")
    return coverage


def split_coverage(family: ModelFamily, split: Any, user_ids: np.ndarray) -> UserCoverage:
    """Which users of ``split`` the family trains and evaluates (dense index ``u`` is ``user_ids[u]``)."""
    n_users = int(split.n_users)
    listed = family.trainable_users(split)
    if listed is None:  # every user with training data
        trainable = np.diff(split.train_indptr) > 0
    else:
        trainable = _mask(listed, n_users)
    evaluated = _mask(family.evaluated_users(split), n_users)
    validation = getattr(split, "validation_item", None)
    validated = None if validation is None else np.asarray(validation) != NO_ITEM
    return UserCoverage.from_masks(user_ids, trainable, evaluated, validated)


def _mask(users: list[int], n_users: int) -> np.ndarray:
    mask = np.zeros(n_users, dtype=bool)
    mask[np.asarray(users, dtype=np.int64)] = True
    return mask


def _too_few(split: Any) -> tuple[str, str]:
    """Why a user of ``split`` cannot train, and why it cannot be evaluated."""
    if hasattr(split, "test_item"):  # leave-one-out
        return ("too few interactions left once the validation and test items are held out",
                "fewer than 2 interactions: leave-one-out holds out a user's latest interaction as its test item")
    return ("no rating left for training", "a single rating: the hold-out keeps at least one for training")


# --- the run directory: checked before, left reusable after a failure ----------------------


def check_out_dir(out_dir: Path) -> None:
    """``ValueError`` when ``out_dir`` cannot be a run directory: it, or a folder above it, is no folder."""
    for path in (out_dir, *out_dir.parents):
        if path.is_dir():
            return
        if path.exists() or path.is_symlink():
            where = "it" if path == out_dir else f"{path}"
            raise ValueError(f"cannot use {out_dir} as the run directory: {where} is a file, not a folder; "
                             "choose another --out")


def _refuse_earlier_run(out_dir: Path) -> None:
    """``FileExistsError`` when ``out_dir`` holds the results of an earlier run."""
    for stale in (METRICS_FILE, SUMMARY_FILE):
        if (out_dir / stale).exists():
            raise FileExistsError(f"{out_dir} already holds a run ({stale}); choose another --out or use --resume")


def _make_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the run directory {out_dir} ({err.strerror or err})") from err


def _entries(folder: Path) -> frozenset[str] | None:
    """The names in ``folder`` (``None``: it does not exist)."""
    return frozenset(p.name for p in folder.iterdir()) if folder.is_dir() else None


def resumable_round(config: RunConfig, out_dir: Path) -> int | None:
    """The round of the checkpoint in ``out_dir`` that ``--resume`` would continue from, or
    ``None`` when it would not (no checkpoint, a dp mode or a model selection resume refuses)."""
    state = out_dir / CHECKPOINT_DIR / STATE_FILE
    if config.dp in UNRESUMABLE_DP or config.model_selection == "best-validation" or not state.is_file():
        return None
    try:
        return int(json.loads(state.read_text())["round"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _after_failure(config: RunConfig, out_dir: Path, before: frozenset[str] | None) -> str:
    """Leave a failed run's directory resumable or as it was; a sentence saying which, and where the logs are.

    A resumed run's directory is kept as it is (it held a checkpoint before). Otherwise,
    when no checkpoint can be resumed, a directory the run created is removed, its logs
    moved to a temporary folder, and the files the run added to an existing directory are
    deleted (its logs stay: they block no rerun).
    """
    logs = out_dir / FLOWER_LOG
    if config.resume:
        return f"{out_dir} keeps its checkpoint: resume it again with --resume {out_dir}; see {logs}"
    checkpoint_round = resumable_round(config, out_dir)
    if checkpoint_round is not None:
        return (f"{out_dir} holds the checkpoint of round {checkpoint_round}: continue with "
                f"`fedrec simulate --resume {out_dir}` (or remove it); see {logs}")
    if before is None:
        kept = _keep_logs(out_dir)
        shutil.rmtree(out_dir, ignore_errors=True)
        where = f"; its logs are in {kept}" if kept is not None else ""
        return f"{out_dir} was removed (no checkpoint to resume from){where}"
    for entry in out_dir.iterdir():
        if entry.name not in before and entry.name not in RUN_LOGS:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    return f"the files this run added to {out_dir} were removed (no checkpoint to resume from); see {logs}"


def _keep_logs(out_dir: Path) -> Path | None:
    """Move a failed run's logs out of ``out_dir`` into a new temporary folder (``None``: there were none),
    below ``$FEDREC_RUNTIME_DIR`` when set."""
    logs = [out_dir / name for name in RUN_LOGS if (out_dir / name).exists()]
    if not logs:
        return None
    parent = os.environ.get(RUNTIME_PARENT_ENV) or None  # beside the runtimes (default: the temp folder)
    kept = Path(tempfile.mkdtemp(prefix=f"fedrec-failed-{out_dir.name}-", dir=parent))
    for path in logs:
        shutil.move(str(path), kept / path.name)
    return kept


# an exception's last line in a traceback: "ValueError: the run has no evaluated round"
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*$")


def _error_line(log_path: Path) -> str:
    """The exception line of the last Python traceback in a Flower log (``""``: none)."""
    if not log_path.is_file():
        return ""
    text = log_path.read_bytes().decode("utf-8", errors="replace")
    _, found, after = text.rpartition("Traceback (most recent call last):")
    if not found:
        return ""
    for line in after.splitlines():
        if EXCEPTION_LINE.match(line):
            return line.strip()
    return ""


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
            kept = runtime.keep_ray_logs(out_dir / RAY_LOGS / f"attempt-{attempt}")
            print(f"Ray failed to start; {kept} of its log files kept in {out_dir / RAY_LOGS}")
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
    """Wait for ``flwr run`` to end, showing rounds as they land in ``metrics.jsonl`` and,
    once, a warning when the training loss keeps rising (:mod:`fedrec.core.evaluation.divergence`)."""
    metrics_path = out_dir / METRICS_FILE
    summary_path = out_dir / SUMMARY_FILE
    k = config.eval_k
    warned = False
    shown = 0
    with Progress(
        TextColumn("[bold]round {task.completed}/{task.total}"), BarColumn(),
        TextColumn("{task.description}"), TimeElapsedColumn(), disable=not show_progress,
    ) as progress:
        task = progress.add_task("starting Flower…", total=config.rounds)
        while True:
            rows = read_complete_rows(metrics_path)  # a line being written is read next time
            if rows:
                progress.update(task, completed=int(rows[-1]["round"]), description=progress_text(rows, k))
                if not warned and len(rows) != shown:
                    shown = len(rows)
                    message = divergence_warning(loss_series(rows))
                    if message is not None:  # printed above the bar (rich redirects stderr while it shows)
                        print_warning(message)
                        warned = True
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
