"""How the command line reports a problem: one line on stderr, no traceback."""

from __future__ import annotations

from typing import IO, Any

import click

__all__ = ["CliError", "CliUsageError"]


class CliError(click.ClickException):
    """Something a person can act on went wrong: ``distproc: error: <message>``, status 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"distproc: error: {self.format_message()}", file=file, err=file is None)


class CliUsageError(CliError):
    """What was asked cannot be done as given (bad argument, no authkey, ...): status 2."""

    exit_code = 2
