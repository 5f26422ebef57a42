"""Our private Ray head node: its options, the environment of what the runtime starts, the
retry of a failed start and the folder its logs are kept in."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fedrec.simulations.flower_runtime import (
    NO_RAY_LOGS_NOTE,
    RAY_LOGS,
    SimulationRuntime,
    simulation_runtime,
    start_ray_head_with_retries,
)
from fedrec.simulations.ray_cluster import (
    GRPC_NO_FORK_SUPPORT,
    HEAD_LOG,
    _skip_api_server,
    head_params,
    signal_name,
)


def test_the_head_node_starts_no_dashboard_and_no_autoscaler(tmp_path: Path) -> None:
    params = head_params(tmp_path / "ray", 23456)
    assert params["include_dashboard"] is False
    assert params["no_monitor"] is True
    assert params["gcs_server_port"] == 23456 and params["temp_dir"] == str(tmp_path / "ray")
    assert params["min_worker_port"] == params["max_worker_port"] == 0  # ports the kernel picks
    assert "dashboard_port" not in params and "dashboard_host" not in params
    import ray._private.parameter as ray_parameter

    ray_parameter.RayParams(**params)  # Ray accepts every option


def test_the_api_server_start_is_skipped() -> None:
    class Node:
        def start_api_server(self, *, include_dashboard: bool, raise_on_failure: bool) -> None:
            raise AssertionError("dashboard.py started")

    _skip_api_server(Node)
    assert Node().start_api_server(include_dashboard=False, raise_on_failure=False) is None


def test_how_a_process_ended_in_words() -> None:
    assert signal_name(None) == "running"
    assert signal_name(1) == "exit code 1"
    assert signal_name(-6) == "signal SIGABRT"
    assert signal_name(-11) == "signal SIGSEGV"


def test_the_runtime_joins_its_own_head_node_without_grpc_fork_support(tmp_path: Path) -> None:
    runtime = SimulationRuntime(tmp_path / "rt", tmp_path / "run")
    assert runtime.env["GRPC_ENABLE_FORK_SUPPORT"] == "0"
    assert runtime.env["RAY_ADDRESS"] == f"127.0.0.1:{runtime.gcs_port}"
    assert 20_000 <= runtime.gcs_port < 65_536
    assert "RAY_GCS_SERVER_PORT" not in runtime.env
    joined = SimulationRuntime(tmp_path / "rt2", tmp_path / "run", ray_address="10.0.0.5:6379")
    assert joined.env["RAY_ADDRESS"] == "10.0.0.5:6379"


def test_ray_logs_go_to_an_existing_folder_even_when_ray_wrote_none(tmp_path: Path) -> None:
    runtime = SimulationRuntime(tmp_path / "rt", tmp_path / "run")
    kept = tmp_path / "run" / RAY_LOGS / "attempt-1"
    assert runtime.keep_ray_logs(kept) == 0
    assert kept.is_dir() and (kept / NO_RAY_LOGS_NOTE).is_file()
    # with logs: the head node's own log and Ray's session logs, sub-folders included
    runtime.ray_head_log.write_text("Ray's head node failed to start\n")
    logs = runtime.ray_tmp / "ray" / "session_1" / "logs"
    (logs / "events").mkdir(parents=True)
    (logs / "raylet.out").write_text("raylet\n")
    (logs / "events" / "event_GCS.log").write_text("gcs\n")
    (logs / "ignored.bin").write_text("x")
    kept2 = tmp_path / "run" / RAY_LOGS / "attempt-2"
    assert runtime.keep_ray_logs(kept2) == 3
    assert sorted(p.name for p in kept2.iterdir()) == ["event_GCS.log", HEAD_LOG, "raylet.out"]


class _FailingHead:
    """A runtime whose head node fails ``failures`` times before it starts."""

    def __init__(self, tmp_path: Path, failures: int) -> None:
        self.runtime = SimulationRuntime(tmp_path / "rt", tmp_path / "run")
        self.failures = failures
        self.runtime.ray_head_attempt = 1
        self.runtime.wait_for_ray_head = self.wait  # type: ignore[method-assign]
        self.runtime.restart_ray_head = self.restart  # type: ignore[method-assign]
        self.ports = [self.runtime.gcs_port]

    def wait(self) -> dict[str, object]:
        if self.runtime.ray_head_attempt <= self.failures:
            raise RuntimeError("Ray's head node failed to start (signal SIGABRT)")
        return {"address": "x"}

    def restart(self) -> None:
        self.runtime.ray_head_attempt += 1
        self.runtime.gcs_port += 1
        self.ports.append(self.runtime.gcs_port)


def test_a_failed_head_start_is_retried_and_its_logs_kept_where_the_message_says(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = _FailingHead(tmp_path, failures=1)
    assert start_ray_head_with_retries(head.runtime, attempts=3) == {"address": "x"}
    kept = tmp_path / "run" / RAY_LOGS / "head-attempt-1"
    out = capsys.readouterr().out
    assert "Ray's head node failed to start (attempt 1 of 3)" in out and f"its logs are in {kept};" in out
    assert kept.is_dir() and any(kept.iterdir())
    assert len(head.ports) == 2  # a fresh head node


def test_a_head_that_never_starts_fails_naming_existing_log_folders(tmp_path: Path) -> None:
    head = _FailingHead(tmp_path, failures=5)
    with pytest.raises(RuntimeError, match="failed to start") as failure:
        start_ray_head_with_retries(head.runtime, attempts=2)
    folder = tmp_path / "run" / RAY_LOGS
    assert str(folder) in str(failure.value)
    assert sorted(p.name for p in folder.iterdir()) == ["head-attempt-1", "head-attempt-2"]


FORK_UNDER_GRPC = textwrap.dedent("""
    import subprocess, threading, time
    from concurrent import futures
    import grpc

    handler = grpc.method_handlers_generic_handler(
        "t.T", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)})
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    echo = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary("/t.T/Echo")
    busy = True

    def calls():
        while busy:
            echo(b"x")

    threading.Thread(target=calls, daemon=True).start()
    time.sleep(0.3)
    # as Ray starts its daemons: fork, Python code in the child (preexec_fn), exec
    codes = [subprocess.Popen(["true"], preexec_fn=lambda: None).wait() for _ in range(60)]
    busy = False
    print(sorted(set(codes)))
""")


@pytest.mark.slow
def test_children_forked_under_busy_grpc_threads_survive_without_grpc_fork_support(tmp_path: Path) -> None:
    """The cause of Ray's failed head starts: forked (with a preexec_fn, as Ray forks its GCS
    server and raylet) from a process whose gRPC threads are busy, a child died of SIGSEGV or
    SIGABRT before it could exec (measured: 17 of 100 children with gRPC's default). Without
    gRPC's fork support every child execs."""
    env = {**os.environ, **GRPC_NO_FORK_SUPPORT}
    done = subprocess.run([sys.executable, "-c", FORK_UNDER_GRPC], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[0]", done.stdout


@pytest.mark.slow
def test_the_runtime_runs_no_dashboard_and_leaves_nothing_behind(tmp_path: Path, no_leftover_processes: None,
                                                                  live_runtime_processes) -> None:
    with simulation_runtime(tmp_path) as runtime:
        assert runtime.ray_head is not None and runtime.ray_head.poll() is None
        time.sleep(1.0)  # the raylet's agents
        joined = "\n".join(_cmdline(pid) for pid in live_runtime_processes())
    assert "gcs_server" in joined and "raylet" in joined
    assert "dashboard/dashboard.py" not in joined  # Ray's API server
    assert "autoscaler/_private/monitor.py" not in joined
    assert not (tmp_path / RAY_LOGS).exists()  # nothing failed


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_the_benchmark_names_processes() -> None:
    from fedrec.simulations.benchmarks.ray_starts import WORKER, _better_name, process_name, ray_start_seconds

    assert process_name(["/v/bin/python3", "-u", "/v/ray/dashboard/agent.py", "--x"]) == "agent.py"
    assert process_name(["/v/bin/python3", "/v/bin/flwr", "run"]) == "flwr"
    assert process_name(["/v/ray/core/src/ray/raylet/raylet", "--a"]) == "raylet"
    assert _better_name("", ["ray::IDLE"]) == WORKER
    assert _better_name("ray::DashboardAgent", ["/v/bin/python3", "-u", "/v/agent.py"]) == "ray::DashboardAgent"
    assert ray_start_seconds([(1.0, "gcs_server"), (2.0, "raylet"), (3.5, WORKER)]) == 2.5
    assert ray_start_seconds([(1.0, "gcs_server")]) is None


@pytest.mark.slow
def test_a_head_node_whose_port_is_taken_is_started_again_on_a_fresh_port(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_processes: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from fedrec.simulations import flower_runtime

    blocker = socket.socket()
    blocker.bind(("0.0.0.0", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    ports = iter([taken])
    real = flower_runtime.gcs_port
    monkeypatch.setattr(flower_runtime, "gcs_port", lambda: next(ports, None) or real())
    try:
        with simulation_runtime(tmp_path) as runtime:
            assert runtime.gcs_port != taken and runtime.env["RAY_ADDRESS"].endswith(f":{runtime.gcs_port}")
            assert runtime.superlink is not None and runtime.superlink.poll() is None
    finally:
        blocker.close()
    kept = tmp_path / RAY_LOGS / "head-attempt-1"
    assert f"its logs are in {kept};" in capsys.readouterr().out
    head_log = (kept / HEAD_LOG).read_text()
    assert "failed to start" in head_log and "gcs_server" in head_log


def test_the_benchmark_counts_both_kinds_of_retry() -> None:
    from fedrec.simulations.benchmarks.ray_starts import RETRY_LINE

    text = ("Ray's head node failed to start (attempt 1 of 3): Ray's head node exited (exit code 1): raylet "
            "(pid 9) ended during the start (signal SIGABRT); its logs are in /r/ray-logs/head-attempt-1; "
            "starting a fresh head node\n"
            "Ray's head node failed to start (attempt 2 of 5); starting a fresh runtime in 5 s\n")
    found = [(m["reason"], int(m["attempt"])) for m in RETRY_LINE.finditer(text)]
    assert found == [("Ray's head node failed to start", 1), ("Ray's head node failed to start", 2)]
    assert "SIGABRT" in next(RETRY_LINE.finditer(text))["detail"]
