"""The ``distproc`` command line.

:mod:`.main` holds the command group and :func:`~distproc.cli.main.main`, the
entry point of the ``distproc`` console script and of ``python -m distproc``;
each subcommand lives in a module of its own (:mod:`.serve`).  Errors a user
can act on are reported as one line, ``distproc: error: ...``, with no
traceback (:mod:`.errors`).
"""

from __future__ import annotations

from .main import cli, main

__all__ = ["cli", "main"]
