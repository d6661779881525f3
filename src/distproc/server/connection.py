"""One server-side connection: its socket's bytes and frames, the handshake, then a session.

A :class:`ServerConnection` is the asyncio protocol of one accepted socket.
It reads frames (checking each length prefix against the limit before
anything is allocated), drives the server's side of the handshake
(:class:`~distproc.wire.handshake.Handshake`), and once it is through hands
every frame to the :class:`~.context.Session` that the server chose from
what was agreed:

* the stdlib's protocol (:mod:`.stdlib_session`);
* distproc's native protocol (:mod:`.native_session`), when the peer's challenge
  carried the upgrade marker.

A connection counts as *handshaking* from its accept until the authkey
handshake is through; the server caps those in total and per peer address
(:meth:`~.context.ServerContext.admit`).  A session may :meth:`hold` the
connection: the server then reads no more of it (its frames already read wait
in the reader) until :meth:`release`, which is how a peer that sends faster
than its calls are served is slowed instead of buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from ..errors import ProtocolError
from ..wire import same_host
from ..wire.codecs import BytesLike
from ..wire.framing import (
    HANDSHAKE_MAX_FRAME,
    IOV_MAX,
    FrameReader,
    drop_sent,
    encode_header,
    frame_views,
)
from ..wire.handshake import TLS_HANDSHAKE_RECORD, Handshake
from .context import ServerContext, Session
from .threads import ThreadGate

__all__ = ["ServerConnection"]

log = logging.getLogger("distproc.server")

#: SO_SNDBUF of accepted sockets (the kernel caps it at net.core.wmem_max).
SEND_BUFFER = 4 * 1024 * 1024
#: Frames at least this large are sent without a copy (see ``send_parts``).
DIRECT_SEND = 256 * 1024
#: Since Python 3.12 the socket transport's writelines() sends with sendmsg()
#: and keeps memoryviews of what waits: no copy at all.
_ZERO_COPY_WRITELINES = sys.version_info >= (3, 12)


def _raw_socket(transport: asyncio.BaseTransport) -> socket.socket | None:
    """The socket under a selector transport (``None`` for other transports)."""
    sock = getattr(transport, "_sock", None)  # private in CPython 3.10 and 3.11 alike
    return sock if isinstance(sock, socket.socket) else None


_HANDSHAKE, _SESSION, _CLOSING = range(3)


class ServerConnection(asyncio.BufferedProtocol):
    """One accepted socket (see the module docstring); the ``CallConnection`` of its calls."""

    def __init__(self, server: ServerContext) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.state = _HANDSHAKE
        self.reader = FrameReader(HANDSHAKE_MAX_FRAME)
        #: Where the peer's first bytes go, until they came (see ``buffer_updated``).
        self._first: memoryview | None = None
        self._unheard = True
        self.handshake: Handshake
        self.timer: asyncio.TimerHandle | None = None
        self.session: Session | None = None
        #: For ``status``: when the connection was made, and what it speaks.
        self.since = time.monotonic()
        self.protocol = "handshake"  # then "native" or "stdlib"
        #: Called (on the loop) when the connection is lost; loop services use it.
        self.close_callbacks: list[Callable[[], None]] = []
        #: Bounds the pool threads that this connection's calls hold.
        self.gate = ThreadGate(server.pool, server.config.max_threads_per_connection)
        #: Whether the server counts this connection among those handshaking.
        self.admitted = False
        #: Why reading is paused (see :meth:`hold`; ``"writing"``: see :meth:`pause_writing`).
        self._holds: set[str] = set()

    # -------------------------------------------------------------- transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (any loop)
        self.peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_UNIX:
            if not self.peer:  # an unbound client socket: name it by its process
                pid = same_host.peer_pid(sock)
                self.peer = f"local process {pid}" if pid else "local process"
        elif sock is not None:
            # A big send buffer lets one send() take a whole large reply; with
            # the kernel's 16 KiB start, asyncio would send it piece by piece,
            # one loop iteration each.  Memory is used only while data waits.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SEND_BUFFER)
        server = self.server
        server.connections.add(self)
        if not server.admit(self):
            self.abort()
            return
        self.admitted = True
        assert server.loop is not None
        self.timer = server.loop.call_later(
            server.config.handshake_timeout, self._handshake_timeout
        )
        self.handshake = server.handshake_for(sock)
        self._start_handshake()

    def _start_handshake(self) -> None:
        for frame in self.handshake.start():
            self.send(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.leave_handshaking()
        self.state = _CLOSING
        if self.timer is not None:
            self.timer.cancel()
        session, self.session = self.session, None  # no cycle keeps either alive
        if session is not None:
            session.closed()
        self.gate.clear()
        callbacks, self.close_callbacks = self.close_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("error in a close callback of the connection from %s", self.peer)

    def leave_handshaking(self) -> None:
        """This connection is through the handshake, or gone: the server stops counting it."""
        if self.admitted:
            self.admitted = False
            self.server.left_handshake(self)

    def pause_writing(self) -> None:
        """The peer reads its replies slower than it sends calls: stop reading it
        until it catches up, so that replies cannot pile up here without bound (the
        stdlib's thread per connection blocks in its send the same way)."""
        self.hold("writing")

    def resume_writing(self) -> None:
        self.release("writing")

    def hold(self, reason: str) -> None:
        """Read nothing more from the peer, and hand no more frames to the
        session, until :meth:`release` of every reason given."""
        holds = self._holds
        if reason in holds:
            return
        holds.add(reason)
        transport = self.transport
        if len(holds) == 1 and transport is not None and not transport.is_closing():
            transport.pause_reading()

    def release(self, reason: str) -> None:
        """Undo :meth:`hold` for ``reason``; the frames already read are handled first."""
        holds = self._holds
        if reason not in holds:
            return
        holds.discard(reason)
        if holds:
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
        if self.server.loop is not None:
            self.server.loop.call_soon(self._frames_read)

    def get_buffer(self, sizehint: int) -> memoryview:
        buf = self.reader.get_buffer(sizehint)
        if self._unheard:
            self._first = buf
        return buf

    def buffer_updated(self, nbytes: int) -> None:
        first, self._first = self._first, None
        self._unheard = False
        if first is not None and nbytes and first[0] == TLS_HANDSHAKE_RECORD:
            # A frame's length never starts so on a handshake: a TLS ClientHello does.
            self.server.limiter.warning(
                "tls", "refusing %s: it speaks TLS, and this server has none (give it "
                "--tls-cert, --tls-key and --tls-ca, or connect without TLS)", self.peer,
            )  # fmt: skip
            self.state = _CLOSING
            assert self.transport is not None
            self.transport.close()
            return
        self.reader.buffer_updated(nbytes)
        self._frames_read()

    def _frames_read(self) -> None:
        """Hand the whole frames read so far to the handshake or the session, in order."""
        reader = self.reader
        holds = self._holds
        while self.state != _CLOSING and not (holds and holds != {"writing"}):
            try:
                frame = reader.next_frame()
            except ProtocolError as exc:
                self.server.limiter.warning(
                    "frame", "dropping connection from %s: %s", self.peer, exc
                )
                self.abort()
                return
            if frame is None:
                break
            session = self.session
            if session is not None:
                session.frame_received(frame)
            else:
                self.handshake_step(frame)
        if self.session is not None:
            self.session.flush()  # also clears flush_scheduled, set while frames were read

    def send(self, payload: bytes) -> None:
        self.send_parts([payload])

    def send_parts(self, parts: list[BytesLike]) -> None:
        """Send one frame made of ``parts``; a large one is not copied on its way out."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        size = sum(map(len, parts))
        header = encode_header(size)
        if size < DIRECT_SEND:
            # One write of one bytes object: writelines() of 3.12 also
            # re-registers the socket with the selector on every call.
            transport.write(b"".join([header, *parts]))
            return
        if _ZERO_COPY_WRITELINES:
            transport.writelines([header, *parts])
            return
        # Before Python 3.12, writelines() joins its parts and write() copies
        # what the socket does not take at once: send what it takes ourselves.
        views = frame_views(header, parts)
        sock = _raw_socket(transport)
        if sock is not None and not transport.get_write_buffer_size():
            with contextlib.suppress(OSError):  # the transport meets it again and reports it
                drop_sent(views, sock.sendmsg(views[:IOV_MAX]))
        for view in views:
            transport.write(view)

    def close(self, exc: BaseException | None = None) -> None:
        self.state = _CLOSING
        if self.session is not None:
            self.session.flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.state = _CLOSING
        if self.transport is not None:
            self.transport.abort()

    # -------------------------------------------------------------- handshake
    def _handshake_timeout(self) -> None:
        if self.state == _HANDSHAKE:
            self.server.limiter.info(
                "timeout",
                "dropping connection from %s: no handshake within %ss",
                self.peer,
                self.server.config.handshake_timeout,
            )
            self.abort()

    def handshake_step(self, data: BytesLike) -> None:
        step = self.handshake.receive(bytes(data))  # at most 256 bytes in the handshake
        for frame in step.send:
            self.send(frame)
        if step.error is not None:
            self.server.limiter.warning(
                "auth", "authentication failed for %s: %s", self.peer, step.error
            )
            self.close()
        elif self.handshake.done:
            self.authenticated()

    def authenticated(self) -> None:
        server = self.server
        agreement = self.handshake.agreement
        assert agreement is not None
        if self.timer is not None:
            self.timer.cancel()
        self.leave_handshaking()
        self.reader.max_size = server.config.max_frame
        session = server.session_for(self, agreement)
        if session is None:
            self.close()
            return
        self.session = session
        self.state = _SESSION
        self.protocol = session.protocol

