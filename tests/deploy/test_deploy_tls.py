"""A real deployment on 127.0.0.1 through the CLI: TLS, node authentication, encrypted state."""

from __future__ import annotations

import json

import numpy as np
import pytest
from harness import rows, wait_for
from typer.testing import CliRunner

from fedrec.cli.main import app
from fedrec.client.device_state import load_state
from fedrec.client.supernode import ClientError
from fedrec.core.data.export import CATALOGUE_FILE, client_file
from fedrec.runtime.certs import init_certs
from fedrec.server.superlink import server_status

pytestmark = pytest.mark.slow
runner = CliRunner()


def cli(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"fedrec {' '.join(map(str, args))} failed:\n{result.output}"
    return result.output


def test_two_devices_train_over_tls_with_node_auth_and_recommend_offline(deployment):
    d = deployment
    out = cli("server", "start", "--certs", d.certs, "--state", d.server_state, "--address", "127.0.0.1",
              "--fleet-port", d.fleet_port, "--control-port", d.control_port,
              "--serverappio-port", d.serverappio_port)
    assert "TLS + SuperNode authentication" in out
    for index, name in enumerate(("phone0", "phone1")):
        cli("certs", "client", name, d.certs)
        assert "registered" in cli("server", "register-client", d.certs / "supernodes" / f"{name}.pub",
                                   "--state", d.server_state)
        d.devices[name] = d.root / name
        out = cli("client", "start", "--server", d.fleet, "--ca", d.certs / "ca.crt",
                  "--key", d.certs / "supernodes" / name, "--data", client_file(d.data, index),
                  "--state-dir", d.root / name, "--device", "cpu")
        assert "(TLS)" in out
    out = cli("server", "run", "--catalogue", d.data / CATALOGUE_FILE, "--state", d.server_state, "--name", "r1",
              "--rounds", "2", "--eval-every", "2", "--executor", "cohort", "--min-nodes", "2", "--timeout", "400")
    assert "done: 2 rounds" in out
    run_dir = d.server_state / "runs" / "r1"
    logged = rows(run_dir)
    assert [r["round"] for r in logged] == [1, 2]
    assert all(r["nodes"] == 2 and r["clients"] == 40 for r in logged)  # 20 users on each device
    assert 0 < logged[-1]["hr@10"] <= 1 and logged[-1]["bytes_up"] > 0

    status = server_status(d.server_state)
    assert status["running"] and status["tls"] and status["node_auth"]
    assert sum(node.get("status") == "online" for node in status["nodes"]) == 2

    # offline recommendations from the device's own state: personal, and non-personal for a stranger
    user = client_file(d.data, 0).read_text().splitlines()[1].split(",")[0]
    seen = {line.split(",")[1] for line in client_file(d.data, 0).read_text().splitlines()[1:]
            if line.split(",")[0] == user}
    listed = json.loads(cli("client", "recommend", "--state-dir", d.root / "phone0", "--user", user, "--json"))
    assert listed[0]["kind"] == "personal" and listed[0]["server_round"] == 2
    items = [entry["item"] for entry in listed[0]["items"]]
    assert len(items) == 10 and not set(items) & seen
    stranger = json.loads(cli("client", "recommend", "--state-dir", d.root / "phone0", "--user", "nobody",
                              "--k", "5", "--json"))
    assert stranger[0]["kind"] == "non-personal" and len(stranger[0]["items"]) == 5

    # the state directory holds no plaintext user vector (nor any 16-byte run of one)
    state = load_state(d.root / "phone0")
    assert len(state.vectors) == 20 and state.global_model
    files = b"".join(p.read_bytes() for p in (d.root / "phone0").rglob("*") if p.is_file())
    for vector in list(state.vectors.values())[:5]:
        raw = np.ascontiguousarray(next(iter(vector.values())), dtype=np.float32).tobytes()
        assert raw[:16] not in files
    assert ((d.root / "phone0" / "state.key").stat().st_mode & 0o777) == 0o600

    assert "server stopped" in cli("server", "stop", "--state", d.server_state)


def test_unregistered_key_foreign_ca_and_plaintext_clients_are_refused(deployment, tmp_path):
    d = deployment
    d.start_server()
    with pytest.raises(ClientError, match="does not know this device's key"):
        d.start_device("rogue", 3, register=False)
    other = tmp_path / "other-ca"
    init_certs(other, ["127.0.0.1"])
    d.new_key("phone9")
    with pytest.raises(ClientError, match="CA|TLS"):
        d.start_device("phone9", 4, ca=other / "ca.crt")
    # without TLS the SuperNode keeps retrying and never joins
    d.start_device("plain", 5, insecure=True)
    wait_for(lambda: "Connection attempt failed" in (d.root / "plain" / "supernode.log").read_text(),
             30, "the plaintext client to fail to connect")
    nodes = server_status(d.server_state)["nodes"]
    assert not any(node.get("status") == "online" for node in nodes), nodes
