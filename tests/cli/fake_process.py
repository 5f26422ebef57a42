"""A stand-in for a ``flwr run`` process that has already exited (for the progress followers)."""

from __future__ import annotations


class EndedProcess:
    """``poll``/``wait`` answer 0 at once; ``kill`` has nothing to stop."""

    returncode = 0

    def poll(self) -> int:
        return 0

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def kill(self) -> None:
        pass
