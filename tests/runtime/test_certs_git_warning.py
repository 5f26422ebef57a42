"""`fedrec certs init` warns when its folder lies in a git work tree that does not ignore it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedrec.cli.main import app

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
runner = CliRunner()


@pytest.fixture(autouse=True)
def no_repository_above(tmp_path: Path, monkeypatch) -> None:
    """git looks for a repository no higher than tmp_path (which may itself lie in one)."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))


def git_repository(path: Path, ignore: str = "") -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    if ignore:
        (path / ".gitignore").write_text(ignore)
    return path


def certs_init(directory: Path):
    result = runner.invoke(app, ["certs", "init", str(directory), "--host", "127.0.0.1"])
    assert result.exit_code == 0, result.output
    assert (directory / "server.key").is_file()
    return result


def test_warns_inside_a_work_tree_that_does_not_ignore_the_folder(tmp_path: Path) -> None:
    repo = git_repository(tmp_path / "repo", ignore="*.log\n")
    result = certs_init(repo / "deploy" / "certs")
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1, result.stderr
    assert str((repo / "deploy" / "certs").resolve()) in warning[0]
    assert "git work tree" in warning[0] and "can be committed" in warning[0]
    assert "warning" not in result.stdout


def test_no_warning_when_git_ignores_the_folder(tmp_path: Path) -> None:
    repo = git_repository(tmp_path / "repo", ignore="certs/\n")
    result = certs_init(repo / "certs")
    assert "warning" not in result.stderr, result.stderr
    nested = git_repository(tmp_path / "other", ignore="secrets/\n")  # an ignored parent folder
    assert "warning" not in certs_init(nested / "secrets" / "certs").stderr


def test_no_warning_outside_a_work_tree(tmp_path: Path) -> None:
    result = certs_init(tmp_path / "certs")
    assert "warning" not in result.stderr, result.stderr
    from fedrec.runtime.certs import unignored_git_work_tree

    assert unignored_git_work_tree(tmp_path / "certs") is None


def test_certs_client_warns_too(tmp_path: Path) -> None:
    repo = git_repository(tmp_path / "repo")
    certs_init(repo / "certs")
    result = runner.invoke(app, ["certs", "client", "phone0", str(repo / "certs")])
    assert result.exit_code == 0, result.output
    assert "supernodes/phone0" in result.stderr and "can be committed" in result.stderr
    from fedrec.runtime.certs import unignored_git_work_tree

    assert unignored_git_work_tree(repo / "certs") == repo.resolve()
