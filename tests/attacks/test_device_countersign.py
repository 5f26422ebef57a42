"""A deployed device countersigns the ledger rows of its own releases (finding 6).

In-process: two deployed devices — the ClientApp's handlers with a device's node config
(CSV, encrypted state directory, its SuperNode key) — and the real server loop. Every
row about a device's release carries the device's ECDSA signature of the row, so a
server that rewrites what a device spent (even re-signing its heads with its own, valid
ledger key) is caught by ``fedrec audit --device-keys``, and so is one that strips the
device signatures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
from inprocess_grid import InProcessGrid

from fedrec.client.encrypted_file import KeySource, prepare_key
from fedrec.core.config.run_config import RunConfig
from fedrec.core.privacy.audit import audit_run
from fedrec.core.privacy.ledger import LEDGER_FILE, PrivacyLedger, read_heads, read_ledger
from fedrec.core.privacy.ledger_chain import anchor
from fedrec.core.privacy.signing import LedgerSigner
from fedrec.core.run_files import METRICS_FILE
from fedrec.protocol.wire import NODE_AUTH_KEY, NODE_DATA_FILE, NODE_DEVICE, NODE_STATE_DIR
from fedrec.runtime.certs import add_client, init_certs
from fedrec.server.loop import run_rounds

CATALOGUE = tuple(f"item{i}" for i in range(40))


def _device(tmp_path: Path, name: str, users: range) -> tuple[dict, Path]:
    lines = [f"u{u},item{(u * 7 + k * 3) % len(CATALOGUE)},1,{k}" for u in users for k in range(6)]
    data = tmp_path / f"{name}.csv"
    data.write_text("user,item,rating,timestamp\n" + "\n".join(lines) + "\n")
    state = tmp_path / f"{name}-state"
    state.mkdir()
    prepare_key(KeySource.for_state_dir(state))
    key = add_client(name, tmp_path / "certs")
    return ({NODE_DATA_FILE: str(data), NODE_STATE_DIR: str(state), NODE_DEVICE: "cpu",
             NODE_AUTH_KEY: str(key.private_key)}, tmp_path / "certs" / "supernodes")


@pytest.fixture(scope="module")
def deployed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp_path = tmp_path_factory.mktemp("deployed")
    init_certs(tmp_path / "certs", ["localhost"])
    first, keys = _device(tmp_path, "phone", range(0, 3))
    second, _ = _device(tmp_path, "tablet", range(3, 6))
    config = RunConfig(dataset="deployment", model="mf", dim=8, rounds=2, eval_every=1, dp="user-local",
                       epsilon=8.0, delta=1e-3, min_nodes=2, catalogue="catalogue.txt", batch_size=4)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run_config.json").write_text(json.dumps(config.to_user_config(), sort_keys=True))
    devices = {11: first, 12: second}
    run_rounds(InProcessGrid(config, sorted(devices), devices.__getitem__), config, run_dir, len(CATALOGUE),  # type: ignore[arg-type]
               None, run_id="deployed-run", catalogue=CATALOGUE)
    signing_key = Path(os.environ["FEDREC_HOME"]) / "ledger-signing.key"
    trusted = tmp_path / "server.pub"
    trusted.write_text(LedgerSigner.load_or_create(signing_key).public_key_hex() + "\n")
    return run_dir, keys, trusted


def test_every_device_release_is_countersigned_and_verifies(deployed_run: tuple[Path, Path, Path]) -> None:
    run_dir, keys, trusted = deployed_run
    rows = read_ledger(run_dir / LEDGER_FILE)
    device_rows = [r for r in rows if r.who.startswith("client:node-")]
    assert {r.release for r in device_rows} == {"train", "evaluate"} and len(device_rows) == 2 * 2 * 6
    assert all(r.device_signature for r in device_rows)
    report = audit_run(run_dir, verify_key=trusted, device_keys=keys)
    assert report.ok, report.problems()
    assert report.device_signatures_checked == len(device_rows)


def _rewrite(run_dir: Path, change) -> None:
    """The server (holding its own ledger key) rewrites the ledger and re-signs every head."""
    rows = read_ledger(run_dir / LEDGER_FILE)
    heads = read_heads(run_dir / LEDGER_FILE)
    signer = LedgerSigner.load_or_create(Path(os.environ["FEDREC_HOME"]) / "ledger-signing.key")
    statement = json.loads(heads[0].statement)
    (run_dir / LEDGER_FILE).unlink()
    lines = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    with PrivacyLedger(run_dir / LEDGER_FILE, run_id=rows[0].run_id) as ledger:
        for line, head in zip(lines, heads):
            ledger.append([change(r.entry) for r in rows if r.round == line["round"]])
            ledger.sign_head(line["round"], head.final, statement["plan_sha256"], statement["config_sha256"], signer)
            line.update(anchor(ledger.head()))
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))


@pytest.mark.parametrize("tamper", ["claim more noise", "strip the signatures"])
def test_a_server_rewriting_a_devices_spend_is_caught(deployed_run: tuple[Path, Path, Path], tmp_path: Path,
                                                      tamper: str) -> None:
    source, keys, trusted = deployed_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)

    def change(entry):
        if not entry.who.startswith("client:node-"):
            return entry
        if tamper == "claim more noise":  # ε recomputed would follow; the device signed the real σ
            return dataclasses.replace(entry, noise_multiplier=entry.noise_multiplier * 3)
        return dataclasses.replace(entry, device_signature="")

    _rewrite(run_dir, change)
    without_devices = audit_run(run_dir, verify_key=trusted)  # the server's own signatures hold
    assert not without_devices.signature_problems
    report = audit_run(run_dir, verify_key=trusted, device_keys=keys)
    assert not report.ok
    assert report.device_problems, report.problems()
