"""The Flower App that ``flwr run`` submits: a ``pyproject.toml`` pointing at installed fedrec.

The FAB Flower builds from this folder is a few hundred bytes: its components name
``fedrec.server.app:app`` and ``fedrec.client.app:app``, which every machine imports
from its installed ``fedrec`` package, and its config lists every run-config key with
its default (Flower only accepts ``--run-config`` overrides of listed keys).
"""

from __future__ import annotations

from pathlib import Path

from fedrec.core.config.run_config import RunConfig

APP_PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "fedrec-sim"
version = "0.1.0"
description = "fedrec simulation app (components come from the installed fedrec package)"
license = { text = "Apache-2.0" }
dependencies = []

[tool.flwr.app]
publisher = "fedrec"

[tool.flwr.app.components]
serverapp = "fedrec.server.app:app"
clientapp = "fedrec.client.app:app"

[tool.flwr.app.config]
"""


def write_app_dir(app_dir: Path) -> Path:
    """Write the app's ``pyproject.toml`` into ``app_dir`` (created); returns ``app_dir``."""
    app_dir.mkdir(parents=True, exist_ok=True)
    defaults = "".join(f"{k} = {toml_value(v)}\n" for k, v in RunConfig().to_user_config().items())
    (app_dir / "pyproject.toml").write_text(APP_PYPROJECT + defaults)
    return app_dir


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
