"""The distributed-DP benchmark's table assembly (no run)."""

from __future__ import annotations

import json

import pytest

from fedrec.simulations.benchmarks.distributed_dp import (
    distributed_bytes,
    markdown,
    plain_bytes,
    summarise,
    write_report,
)


def result(mode: str, eps: float | None, seed: int, hr: float, ndcg: float = 0.2, seconds: float = 60.0) -> dict:
    costs = distributed_bytes(100, 128, 20, None) if mode == "user-distributed" else plain_bytes(100)
    return {"mode": mode, "epsilon_target": eps, "seed": seed, "rounds": 30, "clients_per_round": 943,
            "epsilon_spent": eps, "hr@10": hr, "ndcg@10": ndcg, "seconds": seconds, **costs}


RESULTS = [
    result("user-local", 8.0, 0, 0.10), result("user-local", 8.0, 1, 0.12),
    result("user-distributed", 8.0, 0, 0.40), result("user-distributed", 8.0, 1, 0.44),
    result("user-distributed", 8.0, 2, 0.42),  # no central run for seed 2: left out of the ratio
    result("user-central", 8.0, 0, 0.42), result("user-central", 8.0, 1, 0.44),
    result("off", None, 0, 0.60, seconds=30.0),
    result("user-distributed", 1.0, 0, 0.20), result("user-central", 1.0, 0, 0.25),
]


def test_rows_are_grouped_ordered_and_averaged() -> None:
    rows = summarise(RESULTS)
    assert [(r["mode"], r["epsilon_target"]) for r in rows] == [
        ("off", None), ("user-distributed", 8.0), ("user-distributed", 1.0), ("user-central", 8.0),
        ("user-central", 1.0), ("user-local", 8.0)]
    dist8 = rows[1]
    assert dist8["seeds"] == [0, 1, 2]
    assert dist8["hr@10"] == pytest.approx(0.42) and dist8["hr@10_std"] == pytest.approx(0.02)
    # ratios over the seeds both modes ran: (0.40 + 0.44) / (0.42 + 0.44), (0.40 + 0.44) / (0.10 + 0.12)
    assert dist8["ratio_central"] == pytest.approx(0.84 / 0.86) and dist8["ratio_central_seeds"] == [0, 1]
    assert dist8["ratio_local"] == pytest.approx(0.84 / 0.22)
    assert rows[2]["ratio_central"] == pytest.approx(0.8) and rows[2]["ratio_local"] is None
    assert rows[3]["ratio_central"] is None  # ratios only on the distributed rows
    assert rows[0]["seconds_per_round"] == pytest.approx(1.0) and rows[0]["hr@10_std"] == 0.0
    assert dist8["bytes_up"] == 128 * 4 and dist8["bytes_down"] == 400 and rows[3]["bytes_up"] == 400


def test_the_markdown_table_has_one_line_per_row(tmp_path) -> None:
    rows = summarise(RESULTS)
    table = markdown(rows)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + len(rows)
    assert "| user-distributed | 8 | 8 | 0,1,2 | 0.4200 ± 0.0200 |" in table
    assert "| off | ∞ | — | 0 | 0.6000 |" in table
    assert "0.977" in lines[3]  # 0.84 / 0.86
    write_report(RESULTS, tmp_path, None)
    assert (tmp_path / "table.md").read_text() == table
    assert json.loads((tmp_path / "summary.json").read_text())["rows"][1]["seeds"] == [0, 1, 2]
    assert (tmp_path / "hr_vs_epsilon.png").stat().st_size > 0


def test_bytes_with_measured_secagg_messages() -> None:
    costs = distributed_bytes(100, 128, 20, {"clients": 100, "down": 1000.0, "up": 600.4})
    assert costs["bytes_down"] == 1400 and costs["bytes_up"] == 600
    assert distributed_bytes(100, 128, 16, None)["bytes_up"] == 256  # uint16 entries
