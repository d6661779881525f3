"""``--http HOST:PORT`` and ``--http-token-file FILE``: a dashboard beside a command.

``distproc serve``, ``distproc map`` and ``distproc dashboard`` share them.
The dashboard's libraries (the ``web`` extra) are imported only when
``--http`` is given; without them the command stops, before it starts
anything, with one line that names the pip command.  The port is bound
before the service starts, so a port in use is an error at once.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

import click

from ..addresses import format_address
from ..errors import MissingExtraError
from .errors import CliError, CliUsageError
from .hosts import WILDCARDS, host_addresses
from .options import parse_address

__all__ = ["HttpRequest", "announce_dashboard", "http_options", "http_request", "http_settings"]

_F = TypeVar("_F", bound=Callable[..., Any])


def http_options(command: _F, *, default: str | None = None) -> _F:
    """``--http HOST:PORT`` (``default``, if any) and ``--http-token-file FILE``."""
    command = click.option(
        "--http-token-file",
        metavar="FILE",
        help="The dashboard's token, from FILE (needed then on any address); "
        "by default one derived from the authkey, needed on a non-loopback address only.",
    )(command)
    return click.option(
        "--http",
        metavar="HOST:PORT",
        default=default,
        show_default=default is not None,
        help="Serve the live dashboard and /metrics here (pip install 'distproc[web]').",
    )(command)


class HttpRequest:
    """What ``--http`` asked for: the web layer, the bound socket and the token, if any."""

    def __init__(self, web: ModuleType, sock: socket.socket, token: str | None, given: str):
        self.web = web
        self.sock = sock
        self.token = token
        self.given = given

    def attach(self, server: Any, authkey: bytes) -> Any:
        """Serve the dashboard of ``server`` (a distproc server, not yet serving) on its loop."""
        return self.web.attach(server, self.sock, authkey, self.token)

    def close(self) -> None:
        """Let the port go (the command stopped before the dashboard started)."""
        self.sock.close()


def _checked(http: str, token_file: str | None) -> tuple[ModuleType, tuple[str, int], str | None]:
    """The web layer, ``--http``'s address and the token of ``--http-token-file``."""
    address = parse_address(http)
    try:
        from .. import web
    except MissingExtraError as exc:
        raise CliUsageError(str(exc)) from None
    token = None
    if token_file is not None:
        try:
            token = web.read_token_file(token_file)
        except ValueError as exc:
            raise CliUsageError(str(exc)) from None
    return web, address, token


def _refuse_token_alone(token_file: str | None) -> None:
    if token_file is not None:
        raise CliUsageError("--http-token-file is for the dashboard: give --http HOST:PORT too")


def http_settings(http: str | None, token_file: str | None) -> dict[str, Any]:
    """``http=`` and ``http_token=`` for an Executor, checked (``{}`` without ``--http``)."""
    if http is None:
        _refuse_token_alone(token_file)
        return {}
    _, address, token = _checked(http, token_file)
    return {"http": address, "http_token": token}


def http_request(http: str | None, token_file: str | None) -> HttpRequest | None:
    """Check ``--http`` and ``--http-token-file``, import the web layer and bind the port."""
    if http is None:
        _refuse_token_alone(token_file)
        return None
    web, address, token = _checked(http, token_file)
    try:
        sock = web.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CliError(f"cannot listen on {http} (--http): {reason}") from None
    return HttpRequest(web, sock, token, http)


def announce_dashboard(side: Any, token_file: str | None) -> None:
    """Say where the dashboard is: with its token, unless that came from a file."""
    host, port = side.address
    url = side.url if token_file is not None else side.login_url
    if host in WILDCARDS:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        names = host_addresses(family)
        if names:
            url = url.replace(format_address((host, port)), format_address((names[0], port)), 1)
    note = f" (its token is in {token_file})" if token_file is not None else ""
    click.echo(f"distproc: dashboard at {url}{note}", err=True)
