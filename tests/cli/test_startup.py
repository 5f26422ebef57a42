"""``fedrec --help`` starts fast: importing the command line loads neither torch nor scipy.

Each check imports a module in a fresh interpreter and lists which heavy packages it
loaded; the commands import those inside their functions, when they run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "scipy")


def heavy_modules_after(module: str) -> list[str]:
    """The packages of :data:`HEAVY` a fresh interpreter has loaded after ``import module``."""
    code = f"import json, sys, {module}; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["fedrec.core.config.run_config", "fedrec.core.config.choices",
                                    "fedrec.core.config.training_section"])
def test_the_run_config_imports_no_torch(module: str) -> None:
    assert heavy_modules_after(module) == []


def test_the_command_line_imports_no_torch() -> None:
    assert heavy_modules_after("fedrec.cli.main") == []
