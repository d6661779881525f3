"""How the command line reports a problem: one line on stderr, no traceback."""

from __future__ import annotations

from typing import IO, Any

import click

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "CliError"]

#: Something went wrong while doing what was asked (address in use, ...).
EXIT_FAILURE = 1
#: What was asked cannot be done as given (bad argument, missing authkey, ...).
EXIT_USAGE = 2


class CliError(click.ClickException):
    """An error a person can act on: shown as ``distproc: error: <message>``."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"distproc: error: {self.format_message()}", file=file, err=file is None)
