"""No false success: `server start` and `client start` fail, with the reason, when nothing useful started.

A SuperLink whose port is taken, or a SuperNode that never reaches its server, makes the
command exit non-zero with one ``error:`` line naming the problem, and leaves no process
and no PID file behind. Error paths print no Python traceback.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.runtime.processes import free_listening_port, pids_with_environ

runner = CliRunner()


@contextmanager
def occupied_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port that a plain socket (not ours to start) listens on."""
    with socket.socket() as sock:
        sock.bind((host, free_listening_port()))
        sock.listen()
        yield sock.getsockname()[1]


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_error_line(result, *fragments: str) -> str:
    """Exit status 2, exactly one ``error:`` line on stderr that names every fragment, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no exception escaped
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def server_args(state: Path, fleet: int, control: int, serverappio: int) -> list[object]:
    return ["server", "start", "--insecure", "--state", state, "--address", "127.0.0.1", "--fleet-port", fleet,
            "--control-port", control, "--serverappio-port", serverappio]


def processes_of(state: Path) -> set[int]:
    return pids_with_environ(f"FLWR_HOME={state}")


def stop_leftovers(state: Path) -> None:
    """Stop what a (buggy) start left running, by the PID file it wrote."""
    from fedrec.server.superlink import stop_server

    stop_server(state, grace_s=5)


@pytest.mark.parametrize("role", ["fleet", "control"])
def test_server_start_fails_when_one_of_its_ports_is_taken(tmp_path: Path, role: str, monkeypatch) -> None:
    import fedrec.server.superlink as superlink

    monkeypatch.setattr(superlink, "PORT_RELEASE_WAIT_S", 0.5, raising=False)  # a taken port is not waited out
    state = tmp_path / "server"
    with occupied_port() as taken:
        ports = {"fleet": free_listening_port(), "control": free_listening_port(),
                 "serverappio": free_listening_port(), role: taken}
        try:
            result = invoke(*server_args(state, ports["fleet"], ports["control"], ports["serverappio"]))
            time.sleep(0.5)
            assert_one_error_line(result, f"port {taken}", "already in use", f"--{role}-port")
            assert not (state / "superlink.pid").exists()
            assert not processes_of(state)
            status = invoke("server", "status", "--state", state)
            assert status.exit_code != 0 or "stopped" not in status.output  # never a started-then-stopped server
        finally:
            stop_leftovers(state)


@pytest.mark.slow
def test_a_superlink_that_dies_at_startup_is_reported_with_its_log_line(tmp_path: Path, monkeypatch) -> None:
    """Past the check of the ports (a race lost), the SuperLink's own error reaches the user."""
    import fedrec.server.superlink as superlink

    monkeypatch.setattr(superlink, "_check_ports_free", lambda listeners: None)
    state = tmp_path / "server"
    with occupied_port() as taken:
        try:
            result = invoke(*server_args(state, taken, free_listening_port(), free_listening_port()))
            assert_one_error_line(result, "flower-superlink exited", f"127.0.0.1:{taken} is already in use",
                                  "superlink.log")
            assert not (state / "superlink.pid").exists()
            assert not (state / "server.json").exists()
            assert not processes_of(state)
        finally:
            stop_leftovers(state)


def test_a_port_released_a_moment_later_counts_as_free() -> None:
    """A server killed a moment ago holds its ports while its last threads exit: start waits that out."""
    from fedrec.runtime.processes import PORT_IN_USE, lasting_bind_problem

    sock = socket.socket()
    sock.bind(("127.0.0.1", free_listening_port()))
    sock.listen()
    port = sock.getsockname()[1]
    threading.Timer(0.5, sock.close).start()
    assert lasting_bind_problem("127.0.0.1", port, wait_s=10) is None
    with occupied_port() as taken:
        started = time.monotonic()
        assert lasting_bind_problem("127.0.0.1", taken, wait_s=0.5) == PORT_IN_USE
        assert time.monotonic() - started >= 0.5


def _sleeper(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_foreign_listener_on_the_port_is_not_taken_for_the_process(tmp_path: Path) -> None:
    from fedrec.runtime.processes import wait_until_listening

    process = _sleeper("import time; time.sleep(60)")
    try:
        with occupied_port() as taken:
            with pytest.raises(RuntimeError, match=f"did not listen on port\\(s\\) {taken}"):
                wait_until_listening(process, [taken], tmp_path / "none.log", 0, "sleeper", timeout_s=1.5)
    finally:
        process.kill()
        process.wait()


def test_a_process_that_listens_is_waited_for_and_one_that_exits_is_reported(tmp_path: Path) -> None:
    from fedrec.runtime.processes import wait_until_listening

    port = free_listening_port()
    listener = _sleeper(f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); "
                        "time.sleep(60)")
    try:
        wait_until_listening(listener, [port], tmp_path / "none.log", 0, "listener", timeout_s=30)
    finally:
        listener.kill()
        listener.wait()
    log = tmp_path / "dies.log"
    log.write_text("old run: ERROR everything broke\n")
    offset = log.stat().st_size
    with log.open("a") as handle:
        dying = subprocess.Popen([sys.executable, "-c", "print('starting'); print('\\x1b[91mERROR\\x1b[0m : "
                                  "bad key file'); raise SystemExit(3)"], stdout=handle, start_new_session=True)
    with pytest.raises(RuntimeError) as raised:
        wait_until_listening(dying, [free_listening_port()], log, offset, "dier", timeout_s=30)
    message = str(raised.value)
    assert "dier exited with code 3" in message and "ERROR : bad key file" in message
    assert "old run" not in message and "\x1b" not in message


def _device_csv(tmp_path: Path) -> Path:
    data = tmp_path / "device.csv"
    data.write_text("user,item\nu1,i1\nu1,i2\nu2,i1\nu2,i3\n")
    return data


def client_args(tmp_path: Path, server: str, *extra: object) -> list[object]:
    return ["client", "start", "--server", server, "--insecure", "--data", _device_csv(tmp_path),
            "--state-dir", tmp_path / "device", "--device", "cpu", *extra]


@pytest.mark.slow
def test_client_start_fails_and_stops_its_supernode_when_the_server_is_unreachable(tmp_path: Path) -> None:
    state = tmp_path / "device"
    server = f"127.0.0.1:{free_listening_port()}"  # nothing listens there
    started = time.monotonic()
    try:
        result = invoke(*client_args(tmp_path, server, "--connect-timeout", 3))
        assert_one_error_line(result, f"could not reach the server at {server}", "stopped")
        assert time.monotonic() - started < 40
        assert not (state / "supernode.pid").exists()
        assert not processes_of(state)
    finally:
        from fedrec.client.supernode import stop_client

        stop_client(state, grace_s=5)


@pytest.mark.slow
def test_client_start_keep_retrying_leaves_the_supernode_running_with_a_warning(tmp_path: Path) -> None:
    from fedrec.client.supernode import stop_client

    state = tmp_path / "device"
    try:
        result = invoke(*client_args(tmp_path, f"127.0.0.1:{free_listening_port()}", "--connect-timeout", 2,
                                     "--keep-retrying"))
        assert result.exit_code == 0, result.output
        assert "not connected yet" in result.stderr
        assert (state / "supernode.pid").exists() and processes_of(state)
    finally:
        stop_client(state, grace_s=5)
    time.sleep(0.5)
    assert not processes_of(state)


def test_error_paths_print_one_line_and_no_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    assert_one_error_line(invoke("certs", "init", blocker / "certs", "--host", "127.0.0.1"), str(blocker))
    ports = [free_listening_port() for _ in range(3)]
    assert_one_error_line(invoke(*server_args(blocker / "server", *ports)), "the server did not start", str(blocker))
    assert_one_error_line(invoke("client", "start", "--server", "127.0.0.1:1", "--insecure", "--data",
                                 _device_csv(tmp_path), "--state-dir", blocker / "device"), str(blocker))
    state = tmp_path / "server"
    state.mkdir()
    (state / "server.json").write_text("{not json")
    assert_one_error_line(invoke("server", "status", "--state", state), "server.json")


def test_status_of_a_stopped_server_exits_3_not_0(tmp_path: Path) -> None:
    """A server whose process has gone reports ``stopped`` with exit status 3 (a script's
    ``fedrec server status && …`` must not go on), in text and in JSON."""
    import json

    from fedrec.cli.server import STOPPED_EXIT_CODE

    state = tmp_path / "server"
    state.mkdir()
    (state / "server.json").write_text(json.dumps({
        "pid": 0, "fleet_address": "127.0.0.1:1", "control_address": "127.0.0.1:2",
        "serverappio_address": "127.0.0.1:3", "tls": True, "node_auth": True, "ca_cert": "", "state_dir": str(state)}))
    text = invoke("server", "status", "--state", state)
    assert text.exit_code == STOPPED_EXIT_CODE == 3, text.output
    assert text.output.startswith("stopped")
    as_json = invoke("server", "status", "--state", state, "--json")
    assert as_json.exit_code == 3 and json.loads(as_json.stdout)["running"] is False
