"""The privacy–utility and record-DP benchmarks' table assembly and argument parsing (no run)."""

from __future__ import annotations

import pytest
import typer

from fedrec.simulations.benchmarks.privacy_utility import SETTINGS, plot, report
from fedrec.simulations.benchmarks.record_dp import parse_setting


def row(setting: str, epsilon: float | None, seed: int, hr: float, ndcg: float = 0.25, rounds: int = 20) -> dict:
    return {"setting": setting, "epsilon": epsilon, "seed": seed, "rounds": rounds, "hr@10": hr, "ndcg@10": ndcg,
            "epsilon_spent": epsilon, "seconds": 1.0}


RESULTS = [
    row("off/mf", None, 0, 0.60, 0.35, rounds=85),
    row("record-distributed/ddg", 8.0, 0, 0.50), row("record-distributed/ddg", 8.0, 1, 0.52),
    row("record-distributed/ddg", 1.0, 0, 0.30),
    row("user-central/gaussian", 8.0, 0, 0.45),
]


def test_the_table_averages_seeds_and_divides_by_the_best_non_private_run() -> None:
    table = report(RESULTS, ["record-distributed/ddg", "user-central/gaussian"])
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 3 + 1
    assert "| record-distributed/ddg | 8 | 8 | 0,1 | 0.5100 ± 0.0141 | 0.2500 ± 0.0000 | 0.85 | 0.71 |" in table
    assert "| record-distributed/ddg | 1 | 1 | 0 | 0.3000 | 0.2500 | 0.50 |" in table
    assert "| off/mf (best validation round 85) | ∞ | — | 0 | 0.6000 | 0.3500 | 1 | 1 |" in table


def test_the_plot_is_written(tmp_path) -> None:
    path = tmp_path / "hr.png"
    plot(RESULTS, ["record-distributed/ddg", "user-central/gaussian"], path)
    assert path.stat().st_size > 1000


def test_every_setting_builds_a_valid_config(tmp_path) -> None:
    from dataclasses import replace

    from fedrec.core.config.run_config import RunConfig

    base = RunConfig(dataset="synthetic", model="mf", clients_per_round=10, delta=1e-5)
    for name, (architecture, overrides) in SETTINGS.items():
        config = replace(base, **overrides, epsilon=8.0)
        assert config.model == architecture and config.dp == name.split("/")[0]


def test_record_dp_settings_parse_and_refuse_bad_input() -> None:
    assert parse_setting("40:0.1:0.5:50") == {"rounds": 40, "clip": 0.1, "lr": 0.5, "server_lr": 50.0}
    with pytest.raises(typer.BadParameter, match="T:C:lr:server_lr"):
        parse_setting("40:0.1")
