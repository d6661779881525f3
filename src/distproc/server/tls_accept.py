"""Accepting TLS connections, and telling a plain peer, in the clear, that TLS is required.

asyncio's ``create_server(ssl=...)`` would hand every accepted socket to TLS
at once, so a plain client (a stdlib one, or distproc without TLS options)
would wait for a challenge while the server waits for a ``ClientHello``, and
neither would say why.  So a TLS server accepts here: it looks at the first
byte a peer sends (without reading it, ``MSG_PEEK``).  A TLS client sends its
``ClientHello`` at once (:data:`~distproc.wire.handshake.TLS_HANDSHAKE_RECORD`) and
goes on to asyncio's TLS, then to the connection's handshake; a peer that
stays silent for :attr:`~distproc.tls.TLSConfig.plain_wait` seconds or
sends something else gets :data:`~distproc.wire.handshake.TLS_REQUIRED` as one frame
and is closed.  Each refusal is one log line; the server goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

from ..addresses import format_address
from ..tls import TLSConfig, explain
from ..wire.framing import encode_header
from ..wire.handshake import TLS_HANDSHAKE_RECORD, TLS_REQUIRED

__all__ = ["TLSAcceptor"]

log = logging.getLogger("distproc.server")

#: Seconds to wait before accepting again when ``accept()`` fails (out of descriptors).
ACCEPT_RETRY = 1.0


class TLSAcceptor:
    """Accepts on ``sock`` and gives each TLS peer to ``factory``'s protocol (see the module)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.BaseProtocol],
        tls: TLSConfig,
        handshake_timeout: float,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = factory
        self._tls = tls
        self._context = tls.server_context()
        self._timeout = handshake_timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = loop.create_task(self._accept())

    def close(self) -> None:
        """Stop accepting, and drop the peers still before their TLS handshake."""
        self._accepting.cancel()
        for task in list(self._tasks):
            task.cancel()

    async def _accept(self) -> None:
        while True:
            try:
                conn, _ = await self._loop.sock_accept(self._sock)
            except OSError as exc:
                log.warning("accept() failed: %s; trying again in %gs", exc, ACCEPT_RETRY)
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            task = self._loop.create_task(self._admit(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _admit(self, conn: socket.socket) -> None:
        try:
            peer = format_address(conn.getpeername())
        except OSError:
            peer = "?"
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            first = await self._first_byte(conn)
            if first != TLS_HANDSHAKE_RECORD:
                log.warning(
                    "refusing %s: it does not speak TLS (%s), which this server requires",
                    peer,
                    "it said nothing" if first is None else "no TLS ClientHello",
                )
                with contextlib.suppress(OSError):
                    conn.send(encode_header(len(TLS_REQUIRED)) + TLS_REQUIRED)
                conn.close()
                return
            await self._loop.connect_accepted_socket(
                self._factory, conn, ssl=self._context, ssl_handshake_timeout=self._timeout
            )
        except ssl.SSLError as exc:
            log.warning("%s: refused", explain(exc, peer, server=False))
            conn.close()
        except (OSError, asyncio.TimeoutError) as exc:
            log.info("dropping %s before TLS: %s", peer, exc or type(exc).__name__)
            conn.close()
        except asyncio.CancelledError:
            conn.close()
            raise

    async def _first_byte(self, conn: socket.socket) -> int | None:
        """The first byte ``conn``'s peer sent (left unread), or ``None`` if none came in time."""
        ready: asyncio.Future[None] = self._loop.create_future()
        fd = conn.fileno()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_reader(fd, readable)
        try:
            await asyncio.wait_for(ready, self._tls.plain_wait)
        except asyncio.TimeoutError:
            return None
        finally:
            self._loop.remove_reader(fd)
        data = conn.recv(1, socket.MSG_PEEK)
        if not data:
            raise ConnectionResetError("closed before it said anything")
        return data[0]
