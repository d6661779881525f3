"""What every subcommand shares: ``-v``/``-q`` logging, ``--debug``, signal handling.

Logging goes to stderr, one line per event with a timestamp, through the
``distproc`` logger: warnings by default, ``-v`` adds info, ``-vv`` debug;
``-q`` keeps only errors.  An exception logged with a record is shortened to
its last line unless ``--debug`` is given.

A :class:`~.errors.CliError` is one line with no traceback; with ``--debug``
the traceback of what caused it is printed first.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import signal
import threading
import traceback
from collections.abc import Iterator
from types import FrameType
from typing import Any

import click

__all__ = ["DistprocGroup", "configure_logging", "handle_signals", "raise_keyboard_interrupt"]

LOGGER = "distproc"
_LEVELS = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (so test runners capture it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:
            self.handleError(record)


class _OneLineFormatter(logging.Formatter):
    """``2024-05-01 12:00:00.123 WARNING distproc.server: message``, on one line."""

    default_msec_format = "%s.%03d"

    def __init__(self, debug: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        if self.debug or not record.exc_info:
            return super().format(record)
        exc = record.exc_info[1]
        plain = logging.LogRecord(
            record.name,
            record.levelno,
            record.pathname,
            record.lineno,
            record.msg,
            record.args,
            None,
            record.funcName,
        )
        plain.created, plain.msecs = record.created, record.msecs
        text = super().format(plain)
        if exc is not None:
            text += f" ({type(exc).__name__}: {exc})"
        return " | ".join(text.splitlines())


def configure_logging(verbosity: int, debug: bool = False) -> logging.Handler:
    """Send the ``distproc`` logger to stderr; ``verbosity`` is ``-v`` count minus ``-q`` count."""
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(_OneLineFormatter(debug))
    logger.addHandler(handler)
    index = min(max(2 - verbosity, 0), len(_LEVELS) - 1)
    logger.setLevel(_LEVELS[index])
    return handler


class DistprocGroup(click.Group):
    """A group that, under ``--debug``, prints the cause of a :class:`click.ClickException`.

    Its subcommands are imported when they are run (or listed in ``--help``):
    ``distproc map`` does not import what ``distproc status`` draws its tables
    with, and a worker process imports only ``distproc worker``.
    """

    #: Subcommand name -> ``module:attribute`` of its click command, in this package.
    lazy: dict[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = self.lazy.get(cmd_name)
        if where is None:
            return super().get_command(ctx, cmd_name)
        module, _, name = where.partition(":")
        command: click.Command = getattr(importlib.import_module(module, __package__), name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            cause = exc.__cause__ or exc.__context__
            if ctx.params.get("debug") and cause is not None:
                text = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
                click.echo(text.rstrip("\n"), err=True)
            raise


@contextlib.contextmanager
def handle_signals(handler: Any, *signums: signal.Signals) -> Iterator[None]:
    """Handle ``signums`` with ``handler`` while inside (in the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    """A signal handler that makes SIGTERM stop a command the way Ctrl-C does."""
    raise KeyboardInterrupt
