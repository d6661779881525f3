"""The ``distproc`` command group and :func:`main`, its entry point."""

from __future__ import annotations

from collections.abc import Sequence

import click

from .._version import __version__
from .group import DistprocGroup, configure_logging

__all__ = ["cli", "main"]


@click.group(
    cls=DistprocGroup,
    epilog="""\b
Examples:
  seq 1 100 | distproc map examples.squares:square
  distproc serve myapp.queues:QueueManager --address 127.0.0.1:50000
  distproc status 127.0.0.1:50000
  distproc dashboard 127.0.0.1:50000
  distproc serve --address 127.0.0.1:50000 --store tasks.db
  distproc serve --help
""",
)
@click.version_option(
    __version__, "--version", prog_name="distproc", message="%(prog)s %(version)s"
)
@click.option("-v", "--verbose", count=True, help="Log more to stderr (-vv: debug).")
@click.option("-q", "--quiet", count=True, help="Log less to stderr (only errors).")
@click.option("--debug", is_flag=True, help="Show the traceback behind an error.")
def cli(verbose: int, quiet: int, debug: bool) -> None:
    """distproc: share Python objects between processes and machines.

    A drop-in for multiprocessing.managers; see each command's --help.
    """
    configure_logging(verbose - quiet, debug)


cli.lazy = {
    "dashboard": ".dashboard:dashboard",
    "dead-letters": ".dead_letters:dead_letters",
    "map": ".map:map_command",
    "serve": ".serve:serve",
    "status": ".status:status",
    "worker": ".worker:worker",
}




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
