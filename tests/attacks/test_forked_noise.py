"""Forked ClientApps must not share noise: every process keys its generator from the OS.

A deployed device forks each ClientApp process from a fork server that imported the model
and privacy code once (:mod:`fedrec.client.forked_clientapp`). Anything random created at
import time — a generator, a key — would be copied into every child, so two messages (two
rounds, two users) would carry the same noise and a server could cancel it by differencing
their releases. This forks two children from the device's own fork server (same preload)
and checks that their noise draws are unrelated; it fails if the noise generator were
created once at import.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PROBE = textwrap.dedent("""
    def draw(queue):
        from fedrec.core.privacy.mechanisms import secure_generator

        queue.put([float(x) for x in secure_generator().normal(0.0, 1.0, size=8)])
""")

SCRIPT = textwrap.dedent("""
    import sys

    sys.path.insert(0, sys.argv[1])
    import noise_probe
    from fedrec.client.forked_clientapp import ForkedClientApps

    context = ForkedClientApps()._context  # the device's fork server, with its preload
    queue = context.Queue()
    children = [context.Process(target=noise_probe.draw, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    draws = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(60)
    print("SAME" if draws[0] == draws[1] else "DIFFERENT", [child.exitcode for child in children])
""")


def test_two_forked_clientapps_draw_unrelated_noise(tmp_path: Path) -> None:
    (tmp_path / "noise_probe.py").write_text(PROBE)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DIFFERENT [0, 0]" in done.stdout, done.stdout + done.stderr[-3000:]
