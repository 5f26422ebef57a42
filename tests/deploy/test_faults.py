"""What real fleets do: a device killed mid-round, a server killed and restarted, garbage updates."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from harness import HERE, kill_group, rows, wait_for

from fedrec.client.device_state import load_state
from fedrec.client.supernode import running_pid as device_pid
from fedrec.core.config.run_config import RunConfig
from fedrec.core.privacy.audit import audit_run
from fedrec.runtime.app_package import write_app_dir
from fedrec.server.checkpoint import MODEL_FILE, checkpointed_config, load_arrays, load_checkpoint
from fedrec.server.loop import initial_global_arrays
from fedrec.server.superlink import run_command, server_environment, submit_run
from fedrec.server.superlink import running_pid as server_pid

pytestmark = pytest.mark.slow


def test_device_killed_mid_round_round_completes_and_device_rejoins(deployment):
    d = deployment
    d.start_server()
    d.start_device("phone0", 0)
    d.start_device("phone1", 1)
    log1 = d.root / "phone1" / "supernode.log"
    # Every connected device is asked each round and a round waits for min-nodes 2 to be connected.
    # After the kill the server keeps phone1's dead session until its heartbeats lapse, so a round or
    # two can still ask it and time out with phone0 alone; once phone1 is back, a round has both.
    # Nothing below depends on which round that is (a loaded machine restarts phone1 later): the
    # test waits on events (phone1's first train message; phone1 connected again) and asserts that
    # some round after round 1 had both devices, with enough rounds that the dead session's
    # timeouts cannot use them all up.
    thread, result, run_dir = d.run_in_background("faulty", rounds=6, eval_every=6, min_nodes=2, round_timeout=45.0,
                                                  timeout_s=900)
    wait_for(lambda: "Receiving: train message" in log1.read_text(), 240, "phone1's first train message")
    kill_group(device_pid(d.root / "phone1"))  # gone mid-round, before it could reply
    wait_for(lambda: len(rows(run_dir)) >= 1, 240, "round 1 to complete without phone1")
    d.start_device("phone1", 1)  # the same device comes back with its state directory (returns once connected)
    thread.join(timeout=900)
    assert not thread.is_alive() and result.get("code") == 0, result
    logged = rows(run_dir)
    assert [r["round"] for r in logged] == [1, 2, 3, 4, 5, 6]
    assert logged[0]["nodes"] == 1  # only phone0 answered round 1
    assert max(r["nodes"] for r in logged[1:]) == 2, logged  # phone1 rejoined and answered
    assert load_state(d.root / "phone1").meta["server_round"] >= 2


def test_server_killed_and_restarted_resumes_from_checkpoint_with_its_ledger(deployment):
    d = deployment
    d.start_server()
    d.start_device("phone0", 0)
    d.start_device("phone1", 1)
    config = d.run_config("resumed", rounds=3, eval_every=3, dp="user-local", noise_multiplier=1.0, clip=1.0)
    run_dir = d.server_state / "runs" / "resumed"
    with (d.root / "first.log").open("ab") as log:
        first = subprocess.Popen(run_command(d.server_state, config), env=server_environment(d.server_state),
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: len(rows(run_dir)) >= 1 and load_checkpoint(run_dir).round >= 1
                 if (run_dir / "checkpoint").exists() else False, 240, "round 1 and its checkpoint")
        kill_group(server_pid(d.server_state))  # the SuperLink and its ServerApp die at once
        wait_for(lambda: server_pid(d.server_state) is None, 30, "the killed SuperLink to be gone")
    finally:
        first.kill()
        first.wait(timeout=30)
    done_before = load_checkpoint(run_dir).round
    assert 1 <= done_before < 3
    d.start_server()  # same state directory and ports: registered devices reconnect by themselves
    code = submit_run(d.server_state, checkpointed_config(run_dir, {}), d.root / "resume.log", timeout_s=400)
    assert code == 0
    logged = rows(run_dir)
    assert [r["round"] for r in logged] == [1, 2, 3]  # each round once, none lost, none doubled
    assert load_checkpoint(run_dir).round == 3
    report = audit_run(run_dir)
    assert report.ok, report
    # each device's accountant survived: its users' histories count every round they trained
    for name in ("phone0", "phone1"):
        histories = load_state(d.root / name).histories
        assert len(histories) == 20
        assert all(sum(steps for _, _, steps in h) >= 3 for h in histories.values())


def test_nan_wrong_shape_and_wrong_dtype_updates_are_dropped_and_the_model_is_untouched(deployment, tmp_path):
    d = deployment
    d.start_server()
    for index, mode in enumerate(("nan", "shape", "dtype")):
        d.start_raw_device(f"bad-{mode}", index, f'corrupt="{mode}"', {})
    app_dir = write_app_dir(tmp_path / "corrupting-app")  # the module travels inside the FAB
    shutil.copy(HERE / "corrupting_clientapp.py", app_dir / "corrupting_clientapp.py")
    pyproject = app_dir / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("fedrec.client.app:app", "corrupting_clientapp:app"))
    code, run_dir = d.run("garbage", rounds=1, eval_every=1, min_nodes=3, app_dir=app_dir)
    assert code == 0
    (row,) = rows(run_dir)
    assert row["skipped"] is True and row["nodes"] == 3  # three replies, none usable
    config = RunConfig.from_user_config(d.run_config("garbage"))
    initial = initial_global_arrays(config, len((d.data / "items.txt").read_text().split()))
    final = load_arrays(run_dir / MODEL_FILE)
    assert all(np.array_equal(final[name], initial[name]) for name in initial)
    log = run_dir.with_suffix(".log").read_text()
    for reason in ("holds NaN", "has shape", "has dtype float64"):
        assert reason in log, f"no dropped update logged with {reason!r}"
    assert log.count("dropped the update of node") == 3
