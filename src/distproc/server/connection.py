"""One server-side connection: the handshake, then one of two protocols.

After the handshake a connection speaks:

* the stdlib's protocol: one *server method* request (the connection closes
  after the reply), or, after ``accept_connection``, a channel of object
  calls answered strictly in order, one at a time;
* distproc's native protocol (:mod:`.native`), when the peer's challenge
  carried the upgrade marker (see :mod:`distproc.wire.handshake`).

A native peer on loopback is first told the name of the server's same-host
Unix socket, if both sides asked for it (:mod:`distproc.wire.same_host`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
from ..wire.handshake import FLAG_LOCAL, FLAG_PICKLE, Handshake, make_marker
from ..wire.messages import RETURN, TRACEBACK
from .calls import Call, Message, execute, run_off_loop, traceback_text
from .threads import Worker

if TYPE_CHECKING:
    from .core import Server
    from .native import NativeSession

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


_HANDSHAKE, _FIRST_REQUEST, _CHANNEL, _NATIVE, _CLOSING = range(5)


class _ChannelCall(Call):
    """An object call on a stdlib channel: one in flight at a time."""

    __slots__ = ("conn",)

    def __init__(self, conn: ServerConnection) -> None:
        super().__init__(conn.server)
        self.conn = conn

    def deliver(self, msg: Message) -> None:
        conn = self.conn
        if conn.inflight is not self:
            return  # cancelled: the client is gone
        conn.inflight = None
        conn.send_parts(conn.server.encode_parts(msg))
        if conn.requests:
            conn.next_request()

    @property
    def connection(self) -> ServerConnection:
        return self.conn


class ServerConnection(asyncio.BufferedProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.state = _HANDSHAKE
        self.reader = FrameReader(HANDSHAKE_MAX_FRAME)
        self.handshake: Handshake
        self.timer: asyncio.TimerHandle | None = None
        self.name = ""
        self.requests: deque[BytesLike] = deque()
        self.inflight: _ChannelCall | None = None
        self.sticky_worker: Worker | None = None
        self.session: NativeSession | None = None
        #: For ``status``: when the connection was made, and what it speaks.
        self.since = time.monotonic()
        self.protocol = "handshake"  # then "native" or "stdlib"
        #: Called (on the loop) when the connection is lost; loop services use it.
        self.close_callbacks: list[Callable[[], None]] = []

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
        assert server.loop is not None
        self.timer = server.loop.call_later(
            server.config.handshake_timeout, self._handshake_timeout
        )
        flags = FLAG_PICKLE if server.allow_pickle else 0
        offer = server.local_address is not None and sock is not None
        if offer and same_host.peer_on_loopback(sock):
            flags |= FLAG_LOCAL
        self.handshake = Handshake(
            server.authkey,
            server=True,
            allow_md5=server.config.allow_md5,
            marker=make_marker(flags),
        )
        for frame in self.handshake.start():
            self.send(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.state = _CLOSING
        if self.timer is not None:
            self.timer.cancel()
        call, self.inflight = self.inflight, None
        if call is not None and call.cancel is not None:
            call.cancel()
        self.requests.clear()
        if self.sticky_worker is not None:
            self.sticky_worker.stop()
            self.sticky_worker = None
        if self.session is not None:
            self.session.closed()
        callbacks, self.close_callbacks = self.close_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("error in a close callback of the connection from %s", self.peer)

    def pause_writing(self) -> None:
        """The peer reads its replies slower than it sends calls: stop reading it
        until it catches up, so that replies cannot pile up here without bound (the
        stdlib's thread per connection blocks in its send the same way)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def resume_writing(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        reader = self.reader
        reader.buffer_updated(nbytes)
        while self.state != _CLOSING:
            try:
                frame = reader.next_frame()
            except ProtocolError as exc:
                log.warning("dropping connection from %s: %s", self.peer, exc)
                self.abort()
                return
            if frame is None:
                break
            self.frame_received(frame)
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

    def sticky(self) -> Worker:
        """This connection's own thread, for objects that check the calling thread."""
        if self.sticky_worker is None:
            self.sticky_worker = Worker(f"distproc-conn-{self.name or id(self)}")
        return self.sticky_worker

    def _handshake_timeout(self) -> None:
        if self.state < _FIRST_REQUEST:
            log.info(
                "dropping connection from %s: no handshake within %ss",
                self.peer,
                self.server.config.handshake_timeout,
            )
            self.abort()

    # -------------------------------------------------------------- handshake
    def frame_received(self, frame: BytesLike) -> None:
        state = self.state
        if state == _NATIVE:
            assert self.session is not None
            self.session.frame_received(frame)
        elif state == _CHANNEL:
            self.requests.append(frame)
            if self.inflight is None:
                self.next_request()
        elif state == _FIRST_REQUEST:
            self.first_request(frame)
        else:
            self.handshake_step(frame)

    def handshake_step(self, data: BytesLike) -> None:
        step = self.handshake.receive(bytes(data))  # at most 256 bytes in the handshake
        for frame in step.send:
            self.send(frame)
        if step.error is not None:
            log.warning("authentication failed for %s: %s", self.peer, step.error)
            self.close()
        elif self.handshake.done:
            self.authenticated()

    def authenticated(self) -> None:
        server = self.server
        agreement = self.handshake.agreement
        assert agreement is not None
        if self.timer is not None:
            self.timer.cancel()
        self.reader.max_size = server.config.max_frame
        if agreement.native and server.serializer != "xmlrpclib":
            from .native import NativeSession

            codec = server.session_codec("pickle" if agreement.pickle else "native")
            self.session = NativeSession(self, codec)
            self.state = _NATIVE
            self.protocol = "native"
            name = server.local_address
            if name is not None and agreement.same_host:
                self.send(same_host.name_frame(name))
        elif server.codec is None:
            log.warning(
                "refusing %s: this server speaks only the native protocol (serializer='native')",
                self.peer,
            )
            self.close()
        else:
            self.state = _FIRST_REQUEST
            self.protocol = "stdlib"

    # ------------------------------------------------- the stdlib's protocol
    def parse(self, frame: BytesLike) -> tuple[Any, str, tuple[Any, ...], dict[str, Any]] | None:
        try:
            ident, methodname, args, kwds = self.server.decode(frame)
            if not isinstance(methodname, str):
                raise TypeError(f"method name must be a str, not {type(methodname).__name__}")
            args = tuple(args)
            kwds = dict(kwds)
        except (Exception, SystemExit) as exc:  # unpickling runs the peer's choice of code
            log.warning("bad request from %s: %s", self.peer, exc)
            self.send_parts(self.server.encode_parts((TRACEBACK, traceback_text(exc))))
            return None
        return ident, methodname, args, kwds

    def first_request(self, frame: BytesLike) -> None:
        request = self.parse(frame)
        if request is None:
            self.close()
            return
        _, methodname, args, kwds = request
        server = self.server
        if methodname == "accept_connection":
            self.name = str(args[0]) if args else ""
            self.state = _CHANNEL
            self.send_parts(server.encode_parts((RETURN, None)))
            return
        self.state = _CLOSING
        if methodname == "shutdown":
            self.send_parts(server.encode_parts(server.shutdown_request(self)))
            self.close()
            return
        if methodname not in server.public:
            text = (
                "Traceback (most recent call last):\n"
                f"AttributeError: {methodname!r} is not a server method\n"
            )
            self.send_parts(server.encode_parts((TRACEBACK, text)))
            self.close()
            return
        job = server.method_job(self, methodname, args, kwds)

        def done(msg: Message) -> None:
            self.send_parts(server.encode_parts(msg))
            self.close()

        if methodname in server.loop_methods or (
            methodname == "create" and args and server.creates_on_loop(args[0])
        ):
            done(job())
        else:
            run_off_loop(server, job, done)

    def next_request(self) -> None:
        while self.requests and self.inflight is None and self.state == _CHANNEL:
            request = self.parse(self.requests.popleft())
            if request is not None:
                ident, methodname, args, kwds = request
                call = _ChannelCall(self)
                self.inflight = call
                execute(self.server, call, ident, methodname, args, kwds, self.sticky)


def method_job(
    server: Server, conn: Any, methodname: str, args: tuple[Any, ...], kwds: dict[str, Any]
) -> Callable[[], Message]:
    """A job that runs server method ``methodname`` and returns its reply message."""
    func = getattr(server, methodname)

    def job() -> Message:
        try:
            return (RETURN, func(conn, *args, **kwds))
        except Exception as exc:
            return (TRACEBACK, traceback_text(exc))

    return job
