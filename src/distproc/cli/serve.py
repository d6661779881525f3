"""``distproc serve MODULE:CLASS``: serve a manager's registered objects.

What ``manager.get_server().serve_forever()`` does in a script, as a command:
import the manager class, bind, print where it listens, serve until Ctrl-C,
SIGTERM or a client's ``shutdown``.

The authkey never comes from argv, where ``ps`` shows it to every user of the
machine: it comes from ``DISTPROC_AUTHKEY`` or ``--authkey-file`` and is used as
the UTF-8 bytes of that text.  A loopback address without an authkey gets a
random one, printed once; any other address without an authkey is refused
before anything is imported or bound.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing.managers
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

import click

from ..addresses import format_address, is_loopback
from .errors import CliError, CliUsageError
from .options import AUTHKEY_ENV, DEFAULT_ADDRESS, authkey_options, parse_address, read_authkey
from .targets import load_attribute
from .web_options import announce_dashboard, http_options, http_request

if TYPE_CHECKING:
    from ..managers import BaseManager

__all__ = ["load_manager_class", "serve"]


class _Server(Protocol):
    """What ``BaseManager.get_server()`` returns, as far as this command uses it."""

    address: Any

    def serve(self) -> None: ...

    def stop(self) -> None: ...


def load_manager_class(target: str) -> type[BaseManager]:
    """The ``BaseManager`` subclass named by ``MODULE:CLASS``."""
    from ..managers import BaseManager

    obj = load_attribute(
        target,
        noun="manager",
        form="MODULE:CLASS",
        example="myapp:QueueManager",
        missing="attribute",
        listed="its BaseManager subclasses",
        wanted=lambda _, v: (
            isinstance(v, type) and issubclass(v, BaseManager) and v is not BaseManager
        ),
    )
    if isinstance(obj, type) and issubclass(obj, BaseManager):
        return obj
    if isinstance(obj, type) and issubclass(obj, multiprocessing.managers.BaseManager):
        raise CliUsageError(
            f"{target} derives from multiprocessing.managers.BaseManager; "
            "import BaseManager from distproc.managers instead"
        )
    what = "a class" if isinstance(obj, type) else f"a {type(obj).__name__} object"
    raise CliUsageError(f"{target} is {what}, not a subclass of distproc.managers.BaseManager")


@contextlib.contextmanager
def _stop_on_signals(server: _Server) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM ask ``server`` to stop instead of raising."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        server.stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            if old is not None:
                signal.signal(sig, old)


@click.command(
    epilog="""\b
Example, with this in queues.py in the current directory:
  import queue
  from distproc.managers import BaseManager
  tasks = queue.Queue()
  class QueueManager(BaseManager):
      pass
  QueueManager.register("get_task_queue", callable=lambda: tasks)

\b
  $ distproc serve queues:QueueManager --address 127.0.0.1:50000 \\
        --authkey-file ~/.config/distproc/authkey
  distproc: serving queues:QueueManager on 127.0.0.1:50000
""",
)
@click.argument("manager", metavar="[MODULE:CLASS]", required=False)
@click.option(
    "--address",
    default=DEFAULT_ADDRESS,
    show_default=True,
    metavar="HOST:PORT",
    help="Where to listen; [::1]:PORT for IPv6, port 0 for any free port.",
)
@authkey_options
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Task service: workers a task may take down before it is dead-lettered.",
)
@click.option(
    "--heartbeat-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Task service: seconds a silent worker keeps its tasks.",
)
@click.option(
    "--store",
    metavar="FILE",
    help="Task service: keep the tasks in this SQLite file (created if missing), so "
    "that they survive a restart. Without it they are kept in memory and lost with "
    "the service.",
)
@click.option(
    "--sync",
    type=click.Choice(["full", "normal"]),
    default="full",
    show_default=True,
    help="Task service with --store: 'full' puts every acknowledged task on disk before "
    "the answer; 'normal' is faster, and a power failure (not a crash of the service) "
    "may lose the last acknowledged changes.",
)
@http_options
def serve(
    manager: str | None,
    address: str,
    authkey_file: str | None,
    max_attempts: int,
    heartbeat_timeout: float,
    http: str | None,
    http_token_file: str | None,
    store: str | None,
    sync: str,
) -> int:
    """Serve the objects registered on a manager class, or a task service, until stopped.

    Without MODULE:CLASS, host a task service: masters submit to it with
    distproc.Executor(connect=(HOST, PORT), authkey=...) and workers join it
    with `distproc worker HOST:PORT`; it outlives masters and serves several.
    With --store FILE it keeps queued tasks, results not yet taken, dead
    letters, retry times and counters in that file: restarted on the same
    address and file, it loses nothing it acknowledged, and masters and
    workers that come back carry on (workers within --heartbeat-timeout).

    MODULE:CLASS names a subclass of distproc.managers.BaseManager, imported
    with the current directory on sys.path as `python -m` does. Importing it
    should only define and register; start nothing at import time.

    The authkey comes from $DISTPROC_AUTHKEY or --authkey-file, never from the
    command line. On a loopback address without one, a random authkey is
    generated and printed; any other address needs one.

    Prints "distproc: serving MODULE:CLASS on HOST:PORT" to stderr once it
    listens. Ctrl-C, SIGTERM or a client's shutdown() stop it with status 0.

    --http HOST:PORT also serves the live dashboard and /metrics of this
    server there; on a non-loopback address they need a token (printed).
    """
    host, port = parse_address(address)
    if manager is not None and store is not None:
        raise CliUsageError("--store is for a task service: leave out MODULE:CLASS, or --store")
    key = read_authkey(authkey_file, os.environ)
    generated = key is None
    if key is None:
        if not is_loopback(host):
            raise CliUsageError(
                f"refusing to listen on {address} without an authkey: anyone who can reach it "
                f"could run code here; set {AUTHKEY_ENV} or use --authkey-file FILE"
            )
        key = os.urandom(16).hex()
    what = manager or "a task service"
    if manager is None and store is not None:
        what += f" (tasks in {store})"
    dashboard = http_request(http, http_token_file)  # bound first: its errors come before
    try:
        if manager is None:
            from ..errors import StoreError
            from ..tasks.host import ServiceHost

            try:
                server: _Server = ServiceHost(
                    (host, port), key.encode(), max_attempts=max_attempts,
                    heartbeat_timeout=heartbeat_timeout, store=store, sync=sync,
                )  # fmt: skip
            except StoreError as exc:
                raise CliError(str(exc)) from None
        else:
            cls = load_manager_class(manager)
            server = cls(address=(host, port), authkey=key.encode()).get_server()
    except BaseException as exc:
        if dashboard is not None:
            dashboard.close()
        if not isinstance(exc, OSError):
            raise
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason += " (another server there? use another port, or port 0 for a free one)"
        raise CliError(f"cannot listen on {address}: {reason}") from None
    side = None
    if dashboard is not None:
        side = dashboard.attach(getattr(server, "server", server), key.encode())  # a ServiceHost's
    with _stop_on_signals(server):  # before the line below: whoever reads it may signal us
        if generated:
            click.echo(
                f"distproc: no authkey given, using a random one; clients need {AUTHKEY_ENV}={key}",
                err=True,
            )
        click.echo(f"distproc: serving {what} on {format_address(server.address)}", err=True)
        if side is not None:
            announce_dashboard(side, http_token_file)
        server.serve()
    return 0
