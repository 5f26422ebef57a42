"""The ``fedrec`` command line."""

from fedrec.cli.main import main

__all__ = ["main"]
