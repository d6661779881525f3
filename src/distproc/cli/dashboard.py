"""``distproc dashboard HOST:PORT``: the live dashboard of a server that runs elsewhere.

The dashboard of ``distproc serve --http`` runs on the service's own loop;
this command shows any running distproc server (a task service, a manager,
a ``distproc map --address`` run) or stdlib ``multiprocessing.managers``
server from outside, by asking it for its status report over the network
every ``--interval`` seconds, as ``distproc status --watch`` does: the page
and ``/metrics`` show the same report.  The first question is asked before
the dashboard starts, so a wrong address or authkey is an error at once; a
server that goes away later is shown as unreachable, and asked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import click

from ..addresses import format_address
from .errors import CliUsageError
from .options import AUTHKEY_ENV, authkey_options, parse_address, read_authkey
from .status import fetch_status
from .web_options import announce_dashboard, http_options, http_request

__all__ = ["dashboard"]


def status_reader(
    address: str, key: bytes
) -> tuple[tuple[str, int], Callable[[], dict[str, Any]], Callable[[list[int]], list[int]]]:
    """The target's address, how to read its status report, how to requeue its dead letters.

    The one place where the dashboard learns how to reach what it shows: a
    distproc server over the native protocol (the report of ``distproc
    status``; the requeue of ``distproc dead-letters --requeue``).  A
    ``redis://`` status source plugs in here.
    """
    if address.startswith("redis://"):
        raise CliUsageError(
            "redis:// services have no dashboard yet; give the HOST:PORT of a distproc server"
        )
    where = parse_address(address)

    def fetch() -> dict[str, Any]:
        return fetch_status(where, key)

    def requeue(task_ids: list[int]) -> list[int]:
        from ..tasks.host import close_service, connect_service

        manager, service = connect_service(where, key)
        try:
            return [int(t) for t in service.requeue(task_ids)]
        finally:
            close_service(manager)

    return where, fetch, requeue


async def _serve(side: Any) -> None:
    """Serve ``side`` until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
    try:
        await side.start()
        await stop.wait()
    finally:
        await side.close()
        if in_main:
            for sig in signals:
                loop.remove_signal_handler(sig)


_EPILOG = """\b
Examples:
  $ distproc serve --address 127.0.0.1:50000 &
  $ distproc dashboard 127.0.0.1:50000
  distproc: dashboard at http://127.0.0.1:8080/
  $ distproc dashboard 192.168.0.9:5000 --http 0.0.0.0:8080     # prints the address with its token
"""


@click.command("dashboard", epilog=_EPILOG)
@click.argument("address", metavar="HOST:PORT")
@functools.partial(http_options, default="127.0.0.1:8080")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between two questions to the server.",
)
@authkey_options
def dashboard(
    address: str, http: str, http_token_file: str | None, interval: float, authkey_file: str | None
) -> int:
    """Serve a live dashboard and /metrics of the distproc server at HOST:PORT.

    The page shows what `distproc status` shows, live: tasks, throughput,
    workers, dead letters; a manager's objects and clients. It listens on
    --http (127.0.0.1:8080 by default); on a non-loopback address it needs a
    token, derived from the authkey (printed) or read from --http-token-file.

    The authkey comes from $DISTPROC_AUTHKEY or --authkey-file.
    """
    key = read_authkey(authkey_file, os.environ)
    if key is None:
        raise CliUsageError(
            f"no authkey: set {AUTHKEY_ENV} or use --authkey-file FILE, with the server's key"
        )
    where, fetch, requeue = status_reader(address, key.encode())

    from ..managers import BaseManager

    try:
        fetch()  # a wrong address or authkey is an error now, not a page that says so
        request = http_request(http, http_token_file)
        assert request is not None  # --http has a default
        web = request.web
        source = web.PollingSource(fetch, format_address(where), requeue)
        host, port = request.sock.getsockname()[:2]
        access = web.Access.for_bind(host, port, key.encode(), request.token)
        side = web.HttpSide(request.sock, source, access, interval=interval)
        announce_dashboard(side, http_token_file)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(side))
        source.close()
    finally:
        BaseManager(address=where).close_connections()
    return 0
