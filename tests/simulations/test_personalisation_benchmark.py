"""The personalisation benchmark's table: mean ± sample std over seeds, costs carried, twins without rounds."""

from __future__ import annotations

import pytest

from fedrec.simulations.benchmarks.personalisation import markdown, summarise


def _run(row: str, seed: int, hr: float, **extra: float) -> dict:
    return {"row": row, "seed": seed, "hr@10": hr, "ndcg@10": hr / 2, "wall_seconds": 10.0 + seed, "round": 3 + seed,
            **extra}


def test_summary_is_the_mean_and_sample_std_over_seeds_per_row() -> None:
    runs = [_run("gmf+head+tune", s, hr, train_seconds_per_round=1.0 + s, round_seconds_per_round=2.0,
                 bytes_per_client_round=215296, device_bytes_per_user=260)
            for s, hr in enumerate((0.70, 0.72, 0.74))]
    runs.append(_run("central-mf", 0, 0.67))
    table = {t["row"]: t for t in summarise(runs)}
    tuned = table["gmf+head+tune"]
    assert tuned["seeds"] == 3
    assert tuned["hr@10"] == pytest.approx(0.72) and tuned["hr@10_std"] == pytest.approx(0.02)
    assert tuned["train_seconds_per_round"] == pytest.approx(2.0) and tuned["bytes_per_client_round"] == 215296
    central = table["central-mf"]
    assert central["hr@10_std"] == 0.0 and "train_seconds_per_round" not in central
    text = markdown(summarise(runs), ", 40 rounds")
    assert "| gmf+head+tune | 0.7200 ± 0.0200 | 0.3600 ± 0.0100 | 4 |" in text
    assert "| central-mf | 0.6700 ± 0.0000 |" in text and "— | — | — | — |" in text
