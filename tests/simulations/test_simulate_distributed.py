"""End to end: ``fedrec simulate --executor per-client --dp user-distributed`` (SecAgg+ over
Flower, every user a node), then ``fedrec audit`` on the run directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedrec.secure_aggregation import messages as msg

pytestmark = pytest.mark.slow


def test_a_per_client_simulation_runs_secagg_learns_and_passes_the_audit(tmp_path: Path,
                                                                        no_leftover_processes: None) -> None:
    from fedrec.cli.main import app
    from fedrec.core.config.run_config import RunConfig
    from fedrec.core.families.registry import family_of
    from fedrec.core.federation.server_step import initial_global
    from fedrec.core.run_files import METRICS_FILE, read_jsonl

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["simulate", "--dataset", "synthetic-12", "--model", "mf", "--rounds", "2",
                                      "--clients-per-round", "6", "--dim", "4", "--eval-every", "2",
                                      "--executor", "per-client", "--dp", "user-distributed", "--epsilon", "8",
                                      "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out / METRICS_FILE)
    assert [r["ledger_rows"] for r in rows] == [1, 3]  # a train row a round, the evaluation row
    assert not any(r.get("skipped") for r in rows) and 0 < rows[-1]["epsilon_max"] <= 8 * (1 + 1e-9)
    internal = read_jsonl(out / "server_internal.jsonl")
    assert all(row["nodes"] == 6 and set(row["secagg_bytes_up"]) == set(msg.STAGES) for row in internal)
    plan = json.loads((out / "privacy_plan.json").read_text())
    assert plan["mode"] == "user-distributed" and plan["accountant"] == "ddg-zcdp"
    config = RunConfig.from_user_config(json.loads((out / "run_config.json").read_text()))
    start = initial_global(config, family_of(config.model).load_split(config))
    with np.load(out / "model.npz") as model:
        moved = sum(float(np.linalg.norm(model[name] - start[name])) for name in start)
    assert moved > 0
    audited = CliRunner().invoke(app, ["audit", str(out)])
    assert audited.exit_code == 0, audited.output
    assert json.loads((out / "audit.json").read_text())["ok"]
