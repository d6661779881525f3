"""``distproc dead-letters HOST:PORT``: the tasks a task service gave up on, and requeueing them.

A task that took down ``max_attempts`` workers is a *dead letter*: its
master's future failed with ``WorkerLostError``, and the service keeps the
task (its function, arguments and the history of the workers it took down)
for inspection.  ``--requeue ID`` queues chosen ones again; they run once
more, and their results go to no master (its future has failed already), so
requeue tasks whose effect is what matters.  With ``--store`` the dead
letters survive a restart of the service.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import click

from ..addresses import format_address
from .errors import CliError, CliUsageError
from .options import AUTHKEY_ENV, authkey_options, parse_address, read_authkey

__all__ = ["dead_letters"]


def _line(letter: dict[str, Any]) -> str:
    at = letter.get("at")
    when = datetime.fromtimestamp(at).isoformat(" ", "seconds") if isinstance(at, float) else "?"
    return f"{letter.get('task')}  {letter.get('function')}  {when}  {letter.get('reason')}"


@click.command(
    "dead-letters",
    epilog="""\b
Examples:
  $ distproc dead-letters 127.0.0.1:5000
  $ distproc dead-letters 127.0.0.1:5000 --json
  $ distproc dead-letters 127.0.0.1:5000 --requeue 1099511627777
""",
)
@click.argument("address", metavar="HOST:PORT")
@click.option("--json", "as_json", is_flag=True, help="Print the dead letters as a JSON list.")
@click.option(
    "--requeue",
    "requeue",
    metavar="ID",
    type=int,
    multiple=True,
    help="Queue this dead letter again (repeatable); its result goes to no master.",
)
@authkey_options
def dead_letters(
    address: str, as_json: bool, requeue: tuple[int, ...], authkey_file: str | None
) -> int:
    """List the dead letters of the task service at HOST:PORT, or queue some again.

    Each line is a task id, its function, when it was given up and why (the
    workers it took down and how each ended). The authkey comes from
    $DISTPROC_AUTHKEY or --authkey-file.
    """
    from ..errors import AuthenticationError, NoTaskServiceError
    from ..tasks.host import close_service, connect_service, describe_refusal
    from .redis_cli import dead_letters_report, is_redis_url

    if is_redis_url(address):
        return dead_letters_report(address, None, as_json, requeue)
    where = parse_address(address)
    key = read_authkey(authkey_file, os.environ)
    if key is None:
        raise CliUsageError(f"no authkey: set {AUTHKEY_ENV} or use --authkey-file FILE")
    try:
        manager, service = connect_service(where, key.encode())
    except (AuthenticationError, NoTaskServiceError) as exc:
        raise CliError(describe_refusal(where, exc)) from None
    except OSError as exc:
        raise CliError(
            f"cannot connect to {format_address(where)}: {exc.strerror or exc}"
        ) from None
    try:
        if requeue:
            found = list(service.requeue(list(requeue)))
            missing = [tid for tid in requeue if tid not in found]
            for tid in found:
                click.echo(f"queued again: {tid}")
            if missing:
                raise CliError(
                    f"no dead letter with id {', '.join(map(str, missing))} at "
                    f"{format_address(where)}: see `distproc dead-letters {address}`"
                )
            return 0
        letters: list[dict[str, Any]] = list(service.dead_letters())
    finally:
        close_service(manager)
    if as_json:
        click.echo(json.dumps(letters))
    elif not letters:
        click.echo(f"no dead letters at {format_address(where)}")
    else:
        for letter in letters:
            click.echo(_line(letter))
    return 0
