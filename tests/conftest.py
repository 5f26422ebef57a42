"""Test-wide environment: Flower and Ray write only into folders this session owns."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_OWNED = tempfile.mkdtemp(prefix="fedrec-tests-")
# simulation runtimes of this test session live here (short: Ray's socket paths are limited)
RUNTIME_PARENT = tempfile.mkdtemp(prefix="frt-", dir="/tmp")
os.environ.update({
    "FEDREC_RUNTIME_DIR": RUNTIME_PARENT,
    "FLWR_HOME": os.path.join(_OWNED, "flwr"),
    # the server's ledger-signing key lives outside every run directory, here for the tests
    "FEDREC_HOME": os.path.join(_OWNED, "fedrec-home"),
    "RAY_TMPDIR": os.path.join(_OWNED, "ray"),
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_OWNED, ignore_errors=True)
    shutil.rmtree(RUNTIME_PARENT, ignore_errors=True)
