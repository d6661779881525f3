"""The ``distproc`` command group and :func:`main`, its entry point."""

from __future__ import annotations

from collections.abc import Sequence

import click

from .._version import __version__
from .serve import serve

__all__ = ["cli", "main"]


@click.group(
    epilog="""\b
Examples:
  distproc serve myapp.queues:QueueManager --address 127.0.0.1:50000
  distproc serve --help
""",
)
@click.version_option(
    __version__, "--version", prog_name="distproc", message="%(prog)s %(version)s"
)
def cli() -> None:
    """distproc: share Python objects between processes and machines.

    A drop-in for multiprocessing.managers; see each command's --help.
    """


cli.add_command(serve)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="distproc",
            standalone_mode=False,
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    return result if isinstance(result, int) else 0
