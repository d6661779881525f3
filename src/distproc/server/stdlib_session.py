"""The stdlib's protocol on one connection, after the handshake.

The first request is either one *server method* call (``create``,
``incref``, ...: one reply, then the connection closes) or
``accept_connection``, which turns the connection into a channel of object
calls, answered strictly in order, one at a time (see
``shared/reference/stdlib-managers-protocol.md``, section 4).  Requests that
arrive while a call runs wait here, in order.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from ..wire.codecs import BytesLike, Codec
from ..wire.messages import KIND_RETURN, KIND_TRACEBACK
from .calls import Call, execute, traceback_text
from .connection import ServerConnection
from .context import Message
from .threads import CallThread

__all__ = ["StdlibSession"]

log = logging.getLogger("distproc.server")

_FIRST_REQUEST, _CHANNEL, _OVER = range(3)


class _ChannelCall(Call):
    """An object call on a stdlib channel: one in flight at a time."""

    __slots__ = ("session",)

    def __init__(self, session: StdlibSession) -> None:
        super().__init__(session.server)
        self.session = session

    def deliver(self, msg: Message) -> None:
        session = self.session
        if session.inflight is not self:
            return  # cancelled: the client is gone
        session.inflight = None
        session.send(msg)
        if session.requests:
            session.next_request()

    @property
    def connection(self) -> ServerConnection:
        return self.session.conn


class StdlibSession:
    """The stdlib's protocol on ``conn``, with the server's codec."""

    protocol = "stdlib"

    def __init__(self, conn: ServerConnection, codec: Codec) -> None:
        self.conn = conn
        self.server = conn.server
        self.codec = codec
        self.state = _FIRST_REQUEST
        #: The name that ``accept_connection`` gave (for the sticky thread's name).
        self.name = ""
        self.requests: deque[BytesLike] = deque()
        self.inflight: _ChannelCall | None = None
        self.sticky_thread: CallThread | None = None

    def send(self, msg: Message) -> None:
        self.conn.send_parts(self.server.encode_parts(msg, self.codec))

    def frame_received(self, frame: BytesLike) -> None:
        if self.state == _CHANNEL:
            self.requests.append(frame)
            if self.inflight is None:
                self.next_request()
        elif self.state == _FIRST_REQUEST:
            # The client's pickle protocol, if older than ours, for the whole
            # connection: a Python 2.7 client reads protocol 2 at most.
            self.codec = self.codec.for_peer(frame)
            self.first_request(frame)

    def flush(self) -> None:
        """Every reply is written when it is made."""

    def closed(self) -> None:
        self.state = _OVER
        call, self.inflight = self.inflight, None
        if call is not None and call.cancel is not None:
            call.cancel()
        self.requests.clear()
        if self.sticky_thread is not None:
            self.sticky_thread.stop()
            self.sticky_thread = None

    def sticky(self) -> CallThread:
        """This connection's own thread, for objects that check the calling thread."""
        if self.sticky_thread is None:
            self.sticky_thread = CallThread(f"distproc-conn-{self.name or id(self)}")
        return self.sticky_thread

    def parse(self, frame: BytesLike) -> tuple[Any, str, tuple[Any, ...], dict[str, Any]] | None:
        try:
            ident, methodname, args, kwds = self.server.decode(frame, self.codec)
            if not isinstance(methodname, str):
                raise TypeError(f"method name must be a str, not {type(methodname).__name__}")
            args = tuple(args)
            kwds = dict(kwds)
        except (Exception, SystemExit) as exc:  # unpickling runs the peer's choice of code
            log.warning("bad request from %s: %s", self.conn.peer, exc)
            self.send((KIND_TRACEBACK, traceback_text(exc)))
            return None
        return ident, methodname, args, kwds

    def first_request(self, frame: BytesLike) -> None:
        request = self.parse(frame)
        if request is None:
            self.conn.close()
            return
        _, methodname, args, kwds = request
        if methodname == "accept_connection":
            self.name = str(args[0]) if args else ""
            self.state = _CHANNEL
            self.send((KIND_RETURN, None))
            return
        self.state = _OVER

        def done(msg: Message) -> None:
            self.send(msg)
            self.conn.close()

        self.server.call_server_method(self.conn, methodname, args, kwds, done)

    def next_request(self) -> None:
        while self.requests and self.inflight is None and self.state == _CHANNEL:
            request = self.parse(self.requests.popleft())
            if request is not None:
                ident, methodname, args, kwds = request
                call = _ChannelCall(self)
                self.inflight = call
                execute(self.server, call, ident, methodname, args, kwds, self.sticky)
