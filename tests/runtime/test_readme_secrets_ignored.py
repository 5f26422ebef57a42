"""Following the README's deployment section writes nothing that `git status` would offer to commit."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _deployment_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Deployment"):]
    return section[section.index("```bash") + len("```bash"):section.index("```", section.index("```bash") + 7)]


def _written_paths(block: str) -> set[str]:
    """The folders the README's commands write into (certs, state, exported data), as given."""
    folders = set(re.findall(r"--(?:state|state-dir|out)\s+(\S+)", block))
    folders |= set(re.findall(r"fedrec certs init (\S+)", block))
    return folders


def test_the_readme_flow_names_the_folders_this_test_checks() -> None:
    assert _written_paths(_deployment_block()) >= {"certs", "srv", "dev0", "dev1", "data"}


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git and a clone")
def test_every_file_the_readme_flow_writes_is_ignored_by_git() -> None:
    written = []
    for folder in sorted(_written_paths(_deployment_block())):
        # what each kind of folder holds after the flow: keys, device state, exported files
        for name in ("ca.key", "ca.crt", "server.key", "supernodes/phone0", "supernodes/phone0.pub", "state.key",
                     "state.bin", "server.json", "superlink.log", "client-0.csv", "items.txt"):
            written.append(f"{folder}/{name}")
    done = subprocess.run(["git", "check-ignore", "--no-index", "--verbose", "--non-matching", *written],
                          cwd=ROOT, capture_output=True, text=True)
    not_ignored = [line.split("\t")[-1] for line in done.stdout.splitlines() if line.startswith("::")]
    assert not not_ignored, f"git would offer to commit {not_ignored}: add them to .gitignore"
