"""Running the dashboard: on a distproc server's loop, or on a loop of its own.

The listening socket is bound at once, on the caller's thread, so that a
port in use is an error where the dashboard is asked for (not later, on the
loop); it listens from then on, and connections wait in its backlog until
the loop serves them.  :func:`attach` makes a server's loop serve it from
the server's start to its stop; ``distproc dashboard`` runs
:meth:`HttpSide.start` and :meth:`HttpSide.close` on a loop of its own.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from aiohttp import web

from ..addresses import format_address
from .access import Access
from .app import make_app
from .live import Live
from .sources import ServerSource, StatusSource

if TYPE_CHECKING:
    from ..server import Server

__all__ = ["HttpSide", "attach", "bind"]

log = logging.getLogger("distproc.web")


def bind(address: tuple[str, int]) -> socket.socket:
    """A listening socket at ``address`` (port 0: any free port); ``OSError`` if it cannot be."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=128)
    sock.setblocking(False)
    return sock


class HttpSide:
    """The dashboard's HTTP server on ``sock``, showing ``source`` under ``access``'s rules."""

    def __init__(
        self,
        sock: socket.socket,
        source: StatusSource,
        access: Access,
        *,
        interval: float = 1.0,
        write_timeout: float = 10.0,
    ) -> None:
        self._sock = sock
        name = sock.getsockname()
        self.address: tuple[str, int] = (name[0], name[1])
        self.access = access
        self.live = Live(source, interval=interval, write_timeout=write_timeout)
        self._runner: web.AppRunner | None = None
        self._starting: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT/``, as bound."""
        return f"http://{format_address(self.address)}/"

    @property
    def login_url(self) -> str:
        """:attr:`url` with the token, if one is needed: the address to open."""
        token = self.access.token
        return self.url if token is None else f"{self.url}?token={token}"

    async def start(self) -> None:
        """Serve (on the running loop) until :meth:`close`."""
        runner = web.AppRunner(
            make_app(self.live, self.access), handle_signals=False, access_log=None,
            keepalive_timeout=15.0, shutdown_timeout=1.0,
        )  # fmt: skip
        try:
            await runner.setup()
            self._runner = runner
            await web.SockSite(runner, self._sock).start()
        except BaseException:
            self._sock.close()  # refused, rather than accepted and never answered
            raise
        self.live.start()

    def start_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """Schedule :meth:`start` on ``loop`` (from its thread, the loop running or about to)."""
        self._starting = loop.create_task(self.start(), name="distproc-web-start")
        self._starting.add_done_callback(_log_failure)

    async def close(self) -> None:
        """Stop serving; every open page's stream ends."""
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        await self.live.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self._sock.close()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the dashboard could not start", exc_info=task.exception())


def attach(
    server: Server,
    sock: socket.socket,
    authkey: bytes,
    token: str | None = None,
    *,
    interval: float = 1.0,
    write_timeout: float = 10.0,
) -> HttpSide:
    """A dashboard of ``server`` (not yet serving) on ``sock`` (from :func:`bind`),
    served on the server's loop from its start to its stop."""
    host, port = sock.getsockname()[:2]
    access = Access.for_bind(host, port, authkey, token)
    side = HttpSide(sock, ServerSource(server, format_address(server.address)), access,
                    interval=interval, write_timeout=write_timeout)  # fmt: skip

    def start() -> None:
        assert server.loop is not None
        side.start_soon(server.loop)

    server.on_start.append(start)
    server.on_stop.append(side.close)
    return side
