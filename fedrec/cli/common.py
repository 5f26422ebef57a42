"""What every ``fedrec`` command module shares: how an error or a warning is printed."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(message: str) -> NoReturn:
    """Print ``error: message`` to stderr and exit with status 2 (bad input)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def warn(message: str) -> None:
    """Print ``warning: message`` to stderr."""
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)
