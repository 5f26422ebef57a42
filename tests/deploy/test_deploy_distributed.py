"""``fedrec server run --dp user-distributed`` on 127.0.0.1: SecAgg+ between real devices over
TLS with node authentication (one user per device), then ``fedrec audit``."""

from __future__ import annotations

import json

import pytest
from harness import rows
from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.client.supernode import start_client
from fedrec.core.data.export import CATALOGUE_FILE, client_file, export_for_devices
from fedrec.core.data.loaders import load_dataset
from fedrec.secure_aggregation import messages as msg

pytestmark = pytest.mark.slow
DEVICES = 3


def test_three_single_user_devices_aggregate_securely_and_the_run_passes_the_audit(deployment):
    d = deployment
    data = d.root / "one-user-each"
    export_for_devices(load_dataset(f"synthetic-{DEVICES}", "", 0), DEVICES, data)
    d.start_server()
    for index in range(DEVICES):
        name = f"user{index}"
        d.new_key(name)
        d.devices[name] = d.root / name
        start_client(d.fleet, d.certs / "ca.crt", d.certs / "supernodes" / name, client_file(data, index),
                     d.root / name, device="cpu", connect_wait_s=150)
    code, run_dir = d.run("ud", catalogue=str(data / CATALOGUE_FILE), dp="user-distributed", epsilon=8.0,
                          min_nodes=DEVICES, dim=4)
    assert code == 0, (run_dir.with_suffix(".log")).read_text()[-3000:]
    logged = rows(run_dir)
    assert [r["round"] for r in logged] == [1, 2] and not any(r.get("skipped") for r in logged)
    assert [r["ledger_rows"] for r in logged] == [1, 3]
    internal = [json.loads(line) for line in (run_dir / "server_internal.jsonl").read_text().splitlines()]
    assert all(r["nodes"] == DEVICES and set(r["secagg_bytes_up"]) == set(msg.STAGES) for r in internal)
    audited = CliRunner().invoke(app, ["audit", str(run_dir)])
    assert audited.exit_code == 0, audited.output
