"""``distproc status HOST:PORT``: what a running server holds, and who is connected.

It calls the server method ``status`` (a JSON-ready dict, see
:meth:`distproc.server.core.Server.status`) and draws it with rich
(:mod:`.status_view`), prints it as JSON (``--json``), or redraws it every
``--interval`` seconds (``--watch``: in place on a terminal, else one report
after another; with ``--json``, one JSON line each time).

A stdlib ``multiprocessing.managers`` server has no ``status``: the report is
then built from what it does answer, ``debug_info`` and ``number_of_objects``
(each object's id, refcount and text; nothing about clients), with
``"fallback": "debug_info"`` and a ``note`` that says so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from ..addresses import format_address
from ..errors import AuthenticationError, NotAServerError, RemoteError
from .errors import CliError, CliUsageError
from .group import handle_signals, raise_keyboard_interrupt
from .options import AUTHKEY_ENV, authkey_options, parse_address, read_authkey
from .status_view import render

__all__ = ["Unreachable", "fetch_status", "status"]

log = logging.getLogger("distproc.cli")

_DEBUG_INFO_ENTRY = re.compile(r"^ *(\S+):\s+refcount=(\d+)\n    (.*)$", re.MULTILINE)


class Unreachable(CliError):
    """The server could not be reached (``--watch`` keeps trying)."""


def _stdlib_status(manager: Any, address: str, note: str) -> dict[str, Any]:
    text = str(manager.server_call("debug_info"))
    count = int(manager.server_call("number_of_objects"))
    objects = [
        {"id": ident, "typeid": None, "refcount": int(refs), "repr": shown}
        for ident, refs, shown in _DEBUG_INFO_ENTRY.findall(text)
    ]
    return {
        "kind": "manager",
        "address": address,
        "pid": None,
        "uptime": None,
        "objects": objects,
        "clients": None,
        "services": [],
        "fallback": "debug_info",
        "note": note,
        "number_of_objects": count,
    }


@contextlib.contextmanager
def _reporting(address: str) -> Iterator[None]:
    """Turn what can go wrong while asking ``address`` into one line that says what to do."""
    try:
        yield
    except AuthenticationError:
        raise CliError(
            f"{address} did not accept the authkey: use the server's, "
            f"from ${AUTHKEY_ENV} or --authkey-file"
        ) from None
    except NotAServerError as exc:
        raise Unreachable(str(exc)) from None
    except ConnectionRefusedError:
        raise Unreachable(
            f"cannot connect to {address}: connection refused; is a distproc server "
            "(distproc serve, or distproc map --address) running there?"
        ) from None
    except socket.gaierror as exc:
        raise Unreachable(f"cannot connect to {address}: unknown host ({exc.strerror})") from None
    except (ConnectionError, EOFError) as exc:
        why = f" ({exc})" if str(exc) else ""
        raise Unreachable(
            f"lost the connection to {address}{why}; "
            "is it a distproc or multiprocessing.managers server?"
        ) from None
    except OSError as exc:
        raise Unreachable(f"cannot connect to {address}: {exc.strerror or exc}") from None


def fetch_status(address: tuple[str, int], authkey: bytes) -> dict[str, Any]:
    """The status report of the server at ``address`` (see the module docstring)."""
    from ..managers import BaseManager

    text = format_address(address)
    manager = BaseManager(address=address, authkey=authkey)
    with _reporting(text):
        if manager.server_protocol() == "stdlib":
            note = (
                "a stdlib multiprocessing.managers server (it has no status): objects "
                "from its debug_info; it does not tell its clients"
            )
            return _stdlib_status(manager, text, note)
        try:
            report = manager.server_call("status")
        except RemoteError as exc:
            if "status" not in str(exc):
                raise CliError(f"{text} failed to report its status: {exc}") from None
            note = "an older distproc server (it has no status): objects from its debug_info"
            return _stdlib_status(manager, text, note)
    if not isinstance(report, dict):
        raise CliError(f"{text} answered status with a {type(report).__name__}, not a report")
    return report


def _close(address: tuple[str, int]) -> None:
    from ..managers import BaseManager

    BaseManager(address=address).close_connections()


def _attempt(fetch: Callable[[], dict[str, Any]]) -> dict[str, Any] | Unreachable:
    try:
        return fetch()
    except Unreachable as exc:
        return exc


def _watch(
    fetch: Callable[[], dict[str, Any]],
    first: dict[str, Any],
    interval: float,
    as_json: bool,
    console: Console,
    emit: Callable[[str], None] = click.echo,
) -> None:
    """Show ``first``, then a fresh report every ``interval`` seconds, until interrupted.

    A server that cannot be reached is said so in place of its report, and asked again.
    """
    report: dict[str, Any] | Unreachable = first
    if as_json:
        while True:
            if isinstance(report, Unreachable):
                log.warning("%s; trying again in %gs", report.format_message(), interval)
            else:
                emit(json.dumps(report, default=str))
            time.sleep(interval)
            report = _attempt(fetch)
    # Redrawn in place on a terminal; elsewhere (a file, a pipe) one report after another.
    live = Live(console=console, auto_refresh=False, redirect_stderr=False)
    with live if console.is_terminal else contextlib.nullcontext(live):
        while True:
            view: RenderableType
            if isinstance(report, Unreachable):
                view = Text(f"{report.format_message()}; trying again", style="red")
            else:
                view = render(report)
            footer = Text(
                f"{datetime.now():%H:%M:%S} · every {interval:g}s · Ctrl-C to stop", style="dim"
            )
            if console.is_terminal:
                live.update(Group(view, footer), refresh=True)
            else:
                console.print(Group(view, footer, Text()))
                console.file.flush()
            time.sleep(interval)
            report = _attempt(fetch)


_EPILOG = """\b
Examples:
  $ distproc serve queues:QueueManager --address 127.0.0.1:50000 &
  $ distproc status 127.0.0.1:50000
  $ distproc status 127.0.0.1:50000 --json | jq '.objects | length'
  $ distproc map mymodule:work inputs.jsonl --address 127.0.0.1:50000 &
  $ distproc status 127.0.0.1:50000 --watch --interval 1
"""


@click.command("status", epilog=_EPILOG)
@click.argument("address", metavar="HOST:PORT")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON, for scripts.")
@click.option("--watch", is_flag=True, help="Redraw the report until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between two reports of --watch.",
)
@authkey_options
def status(
    address: str, as_json: bool, watch: bool, interval: float, authkey_file: str | None
) -> int:
    """Show what the server at HOST:PORT holds and who is connected to it.

    For a task service (distproc map --address, or a served task service):
    tasks queued, leased, done, failed and dead; each worker's host, pid,
    slots, tasks done and the age of its oldest running task; the throughput
    over the last minute; the store (memory, or a file's path, size, schema
    version and sync mode, and what it does not guarantee); the dead letters
    with their reasons.

    For a manager (distproc serve): the objects it holds, with their typeid
    and refcount, and the connected clients. A stdlib multiprocessing.managers
    server only tells its objects, from its debug_info.

    The authkey comes from $DISTPROC_AUTHKEY or --authkey-file.
    """
    from .redis_cli import is_redis_url, redis_status

    if is_redis_url(address):
        return redis_status(address, None, as_json)
    where = parse_address(address)
    key = read_authkey(authkey_file, os.environ)
    if key is None:
        raise CliUsageError(
            f"no authkey: set {AUTHKEY_ENV} or use --authkey-file FILE, with the server's key"
        )

    def fetch() -> dict[str, Any]:
        return fetch_status(where, key.encode())

    try:
        if not watch:
            report = fetch()
            if as_json:
                click.echo(json.dumps(report, indent=2, default=str))
            else:
                Console().print(render(report))
            return 0
        first = fetch()  # a wrong key or address is an error, not something to watch
        with handle_signals(raise_keyboard_interrupt, signal.SIGTERM):
            try:
                _watch(fetch, first, interval, as_json, Console())
            except KeyboardInterrupt:
                return 0
    finally:
        _close(where)
    return 0
