"""What a connection, its session and its calls use of their server.

:class:`ServerContext` lists it; :class:`~.core.Server` is the one
implementation.  The modules that serve a connection (:mod:`.connection`,
:mod:`.stdlib_session`, :mod:`.native_session`, :mod:`.calls`) name this Protocol and
never the server itself, so they do not import it, and what they may touch
of it is written here, in one place.  :class:`Session` is what a connection
hands its frames to once the handshake is over.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import Callable
from typing import Any, Protocol

from ..wire.codecs import BytesLike, Codec
from ..wire.handshake import Agreement, Handshake
from .config import ServerConfig
from .lograte import LogLimiter
from .objects import Entry, ObjectTable
from .queues import LoopQueue
from .threads import ElasticPool

__all__ = ["Message", "ServerContext", "Session"]

#: A reply: ``(kind, value)``, kind one of :mod:`distproc.wire.messages`' reply kinds.
Message = tuple[str, Any]


class Session(Protocol):
    """One protocol spoken on one connection, after the handshake."""

    #: The codec of its messages.
    codec: Codec
    #: Its name in ``status``: ``"native"`` or ``"stdlib"``.
    protocol: str

    def frame_received(self, frame: BytesLike) -> None:
        """Handle one frame from the peer."""
        ...

    def flush(self) -> None:
        """Write what waits to be written (called after each read from the socket)."""
        ...

    def closed(self) -> None:
        """The connection is gone: cancel what waits for it."""
        ...


class ServerContext(Protocol):
    """The parts of a server that its connections, sessions and calls use."""

    #: The address the server listens on.
    address: Any
    #: Limits and policies.
    config: ServerConfig
    #: The shared objects, by id.
    table: ObjectTable
    #: The threads that run calls that may block.
    pool: ElasticPool
    #: The loop that serves every connection (set while the server serves).
    loop: asyncio.AbstractEventLoop | None
    #: The connections alive (``status`` lists them; a stop closes them).
    connections: set[Any]
    #: References of native sessions whose connection dropped, by session id,
    #: with the timer that releases them.
    orphans: dict[bytes, tuple[collections.Counter[str], asyncio.TimerHandle]]
    #: Rate-limits the log lines that peers can cause.
    limiter: LogLimiter

    def admit(self, conn: Any) -> bool:
        """Count ``conn`` among the connections in the handshake; ``False``: too many."""
        ...

    def left_handshake(self, conn: Any) -> None:
        """``conn``, admitted, is through the handshake or gone."""
        ...

    def handshake_for(self, sock: socket.socket | None) -> Handshake:
        """The server's side of the handshake with the peer at the other end of ``sock``."""
        ...

    def session_for(self, conn: Any, agreement: Agreement) -> Session | None:
        """The session that ``conn`` speaks after ``agreement``; ``None``: refuse the peer."""
        ...

    def decode(self, data: BytesLike, codec: Codec | None = None) -> Any:
        """A peer's message (with the server's codec unless told), decoded as the server."""
        ...

    def encode_parts(self, msg: Any, codec: Codec | None = None) -> list[BytesLike]:
        """A message as the parts of a frame; one that cannot be encoded becomes an error."""
        ...

    def call_server_method(
        self,
        conn: Any,
        method: str,
        args: tuple[Any, ...],
        kwds: dict[str, Any],
        done: Callable[[Message], None],
    ) -> None:
        """Run server method ``method`` for ``conn``; its reply goes to ``done``, on the loop."""
        ...

    def result_message(self, entry: Entry, methodname: str, result: Any) -> Message:
        """The reply to a call of ``entry``'s method that returned ``result``."""
        ...

    def loop_queue(self, q: Any) -> LoopQueue:
        """The loop's waiters of queue ``q``."""
        ...
