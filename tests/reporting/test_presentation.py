"""Presentation lives in fedrec.reporting: the core draws and prints nothing."""

from __future__ import annotations

import re
from pathlib import Path

import fedrec
from fedrec.core.run_files import CURVES_FILE
from fedrec.reporting.curves import plot_curves

CORE = Path(fedrec.__file__).parent / "core"
PRESENTATION = re.compile(r"^\s*(import|from)\s+(matplotlib|rich)\b", re.M)


def test_core_imports_no_matplotlib_or_rich() -> None:
    offenders = [str(path.relative_to(CORE)) for path in sorted(CORE.rglob("*.py"))
                 if PRESENTATION.search(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    rows = [{"round": 1, "train_loss": 0.7}, {"round": 2, "train_loss": 0.5, "hr@10": 0.3, "ndcg@10": 0.2}]
    path = tmp_path / CURVES_FILE
    plot_curves(rows, 10, path, {"hr@10": 0.1, "ndcg@10": 0.05}, title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
