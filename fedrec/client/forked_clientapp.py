"""Flower's ClientApp process for one message, forked from a server that imported everything once.

Flower 1.32's superexec starts ``flwr-clientapp`` for every message a device receives: a
fresh interpreter that imports Flower, then the ClientApp (and, for training, torch) —
about 1.2 s of CPU for Flower and 2 s more for torch on a small core, paid per message,
four times a round under ``dp user-distributed``. :class:`ForkedClientApps` stands in for
``subprocess`` inside Flower's ``SubprocessExecutor`` (installed by
:mod:`fedrec.client.supernode_process`): a ``flwr-clientapp`` command runs Flower's own
``flwr_clientapp`` entry point, with the same arguments, in a child forked from a
``multiprocessing`` fork server that has imported Flower, the fedrec ClientApp and its model
code once (:data:`PRELOAD`). Each message still gets its own process (what Flower's process
isolation promises: nothing of one message's run survives into the next); the fork server
holds no secret and no connection, only imported modules. Should the fork server be
unavailable, the command runs as Flower would run it (a new process), with one warning.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import subprocess
import sys
from types import ModuleType
from typing import Any

logger = logging.getLogger("fedrec.client")
CLIENTAPP = "flwr-clientapp"
# what the handlers import, some of it lazily (the accountants import opacus when first used)
PRELOAD = ["flwr.supernode.cli", "fedrec.client.app", "fedrec.client.handlers", "opacus"]


def run_flower_clientapp(arguments: list[str]) -> None:
    """The body of one forked ClientApp process: Flower's entry point with ``arguments``."""
    from flwr.supernode.cli import flwr_clientapp

    sys.argv = [CLIENTAPP, *arguments]
    flwr_clientapp()


class ForkedClientApps:
    """Stands in for ``subprocess`` in Flower's ``SubprocessExecutor``: ``Popen([CLIENTAPP, …])``
    forks the ClientApp from the fork server; every other command is ``subprocess``'s."""

    def __init__(self, module: ModuleType = subprocess) -> None:
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # the children open their own channels
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)
        self._module = module
        self._warned = False

    def Popen(self, command: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 (subprocess's name)
        if not (isinstance(command, list) and command[:1] == [CLIENTAPP]):
            return self._module.Popen(command, *args, **kwargs)
        multiprocessing.active_children()  # forget the finished ones (and their pipes)
        process = self._context.Process(target=run_flower_clientapp, args=(list(command[1:]),), daemon=True)
        try:
            process.start()
        except (OSError, EOFError, RuntimeError) as error:  # no fork server: Flower's own way, slower
            if not self._warned:
                logger.warning("cannot fork the ClientApp (%s); starting %s as a new process instead", error,
                               CLIENTAPP)
                self._warned = True
            return self._module.Popen(command, *args, **kwargs)
        return process

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)
