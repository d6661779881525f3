"""The server: one asyncio event loop that owns every socket.

Per connection, the loop runs the handshake, then either one *server method*
(``create``, ``incref``, ``decref``, ...: the connection closes after the reply)
or, after ``accept_connection``, a channel of object calls answered in order.

Where a call runs:

* on the loop: server bookkeeping, ``get``/``put`` on queues (see
  :mod:`.queues`: a blocked getter is a waiter record, not a thread), and the
  methods of builtin containers that cannot block (:data:`INLINE_METHODS`);
* on a connection's own thread: methods of objects that check the calling
  thread (``RLock``, ``Condition``);
* on the elastic pool (:mod:`.threads`): every other user method, since any of
  them may block.  The reply is encoded on the pool thread and written by the
  loop.

Bad input never costs other clients anything: a frame over the limit is
refused from its length prefix, garbage fails the handshake, a silent peer is
dropped after ``handshake_timeout``, and a client that disconnects has its
pending calls cancelled.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import socket
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import AuthenticationError, ConnectionLostError, ProtocolError
from ..wire import handshake
from ..wire.codecs import Codec, get_codec
from ..wire.framing import DEFAULT_MAX_FRAME, HANDSHAKE_MAX_FRAME, FrameDecoder, encode_header
from ..wire.messages import ERROR, PROXY, RETURN, TRACEBACK, UNSERIALIZABLE, Token
from .objects import Entry, ObjectTable, public_methods
from .queues import LoopQueue, is_loop_servable
from .threads import ElasticPool, Worker

__all__ = ["INLINE_METHODS", "Server", "ServerConfig", "unpickling_server"]

log = logging.getLogger("distproc.server")

#: Registry entries: typeid -> (callable, exposed, method_to_typeid, proxytype).
Registry = dict[str, tuple[Any, Any, Any, Any]]

#: Methods that run on the loop because they cannot block (per exact type).
INLINE_METHODS: dict[type, frozenset[str]] = {
    list: frozenset(
        [
            "__add__",
            "__contains__",
            "__delitem__",
            "__getitem__",
            "__len__",
            "__mul__",
            "__reversed__",
            "__rmul__",
            "__setitem__",
            "append",
            "count",
            "extend",
            "index",
            "insert",
            "pop",
            "remove",
            "reverse",
            "sort",
            "__imul__",
        ]
    ),
    dict: frozenset(
        [
            "__contains__",
            "__delitem__",
            "__getitem__",
            "__iter__",
            "__len__",
            "__setitem__",
            "clear",
            "copy",
            "get",
            "items",
            "keys",
            "pop",
            "popitem",
            "setdefault",
            "update",
            "values",
        ]
    ),
    array.array: frozenset(["__len__", "__getitem__", "__setitem__"]),
}
_QUEUE_INLINE = frozenset(["qsize", "empty", "full", "put_nowait", "get_nowait", "task_done"])
_STICKY_TYPES = (type(threading.RLock()), threading.Condition)

_tls = threading.local()


def unpickling_server() -> Server | None:
    """The server whose request this thread is decoding right now, if any."""
    return getattr(_tls, "server", None)


@dataclass
class ServerConfig:
    """Limits and policies of a server."""

    #: Largest frame accepted after the handshake, in bytes.
    max_frame: int = DEFAULT_MAX_FRAME
    #: Seconds a new connection has to complete the handshake.
    handshake_timeout: float = 10.0
    #: Accept HMAC-MD5 answers from legacy (CPython <= 3.11) peers.
    allow_md5: bool = True
    #: ``listen()`` backlog.
    backlog: int = 128


def _bind(address: Any, backlog: int) -> socket.socket:
    if isinstance(address, (str, bytes)):
        sock = socket.socket(socket.AF_UNIX)
    else:
        host = address[0]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address if isinstance(address, (str, bytes)) else (address[0], address[1]))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Server:
    """Serves the objects of a manager's registry.  See the module docstring."""

    public = [
        "shutdown",
        "create",
        "accept_connection",
        "get_methods",
        "debug_info",
        "number_of_objects",
        "dummy",
        "incref",
        "decref",
    ]
    #: Server methods cheap enough to run on the loop.
    loop_methods = frozenset(
        {"dummy", "incref", "decref", "get_methods", "debug_info", "number_of_objects"}
    )

    def __init__(
        self,
        registry: Registry,
        address: Any,
        authkey: bytes,
        serializer: str,
        *,
        config: ServerConfig | None = None,
    ) -> None:
        if not isinstance(authkey, bytes):
            raise TypeError(f"Authkey {authkey!r} is type {type(authkey)!s}, not bytes")
        self.registry = registry
        self.authkey = authkey
        self.serializer = serializer
        self.codec: Codec = get_codec(serializer)
        self.config = config or ServerConfig()
        self._sock = _bind(("127.0.0.1", 0) if address is None else address, self.config.backlog)
        name = self._sock.getsockname()
        self.address: Any = name if isinstance(name, str) else (name[0], name[1])
        self.table = ObjectTable()
        self.pool = ElasticPool()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connections: set[_Connection] = set()
        self.started = threading.Event()
        self.stopped = threading.Event()
        self._stop_requested = False

    # ------------------------------------------------------------------ running
    def serve(self) -> None:
        """Run until :meth:`stop`, a ``shutdown`` request or Ctrl-C; then return."""
        loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            stop = loop.create_future()
            self._stop_future = stop
            srv = loop.run_until_complete(
                loop.create_server(lambda: _Connection(self), sock=self._sock)
            )
            self.started.set()
            # stop() sets the flag before it looks at `started`: one of the two sees the other.
            if self._stop_requested:
                stop.set_result(None)
            try:
                with contextlib.suppress(KeyboardInterrupt):
                    loop.run_until_complete(stop)
            finally:
                srv.close()
                loop.run_until_complete(self._close_connections())
        finally:
            self.pool.shutdown()
            loop.close()
            self._sock.close()
            self.stopped.set()

    def serve_forever(self) -> None:
        """Serve until shut down, then exit the process, as the stdlib's server does."""
        import sys

        self.serve()
        sys.exit(0)

    def stop(self) -> None:
        """Ask the server to stop; safe from any thread."""
        self._stop_requested = True
        loop = self.loop
        if loop is None or not self.started.is_set():
            return

        def _set() -> None:
            if not self._stop_future.done():
                self._stop_future.set_result(None)

        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(_set)

    async def _close_connections(self) -> None:
        lost = ConnectionLostError("the server is shutting down")
        for conn in list(self.connections):
            conn.close(lost)
        for _ in range(50):
            if not self.connections:
                break
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.abort()

    # ------------------------------------------------------------ server methods
    def dummy(self, c: Any) -> None:
        pass

    def create(
        self, c: Any, typeid: str, /, *args: Any, **kwds: Any
    ) -> tuple[str, tuple[str, ...]]:
        """Create a shared object of ``typeid``; return its id and exposed methods."""
        try:
            callable_, _, _, _ = self.registry[typeid]
        except KeyError:
            raise KeyError(f"unknown typeid {typeid!r}") from None
        if callable_ is None:
            if kwds or len(args) != 1:
                raise ValueError("Without callable, must have one non-keyword argument")
            obj = args[0]
        else:
            obj = callable_(*args, **kwds)
        return self.add_object(typeid, obj)

    def add_object(self, typeid: str, obj: Any) -> tuple[str, tuple[str, ...]]:
        """Put ``obj`` in the table under ``typeid`` (refcount 1)."""
        _, exposed, method_to_typeid, _ = self.registry[typeid]
        if exposed is None:
            exposed = public_methods(obj)
        if method_to_typeid is not None:
            if not isinstance(method_to_typeid, dict):
                raise TypeError(
                    f"Method_to_typeid {method_to_typeid!r}: type {type(method_to_typeid)!s}, "
                    "not dict"
                )
            exposed = list(exposed) + list(method_to_typeid)
        return self.table.add(obj, typeid, exposed, method_to_typeid)

    def incref(self, c: Any, ident: str) -> None:
        self.table.incref(ident)

    def decref(self, c: Any, ident: str) -> None:
        self.table.decref(ident)

    def get_methods(self, c: Any, token: Token) -> tuple[str, ...]:
        return self.table.get(token.id).exposed_order  # type: ignore[arg-type]  # id is set

    def number_of_objects(self, c: Any) -> int:
        return len(self.table)

    def debug_info(self, c: Any) -> str:
        return self.table.debug_info()

    def accept_connection(self, c: Any, name: str) -> None:
        """Handled by the connection itself; listed for the stdlib's ``public``."""

    def shutdown(self, c: Any) -> None:
        """Handled by the connection itself (it replies first, then stops the server)."""

    # ------------------------------------------------------------------ helpers
    def loop_queue(self, q: Any) -> LoopQueue:
        assert self.loop is not None
        lq: LoopQueue | None = getattr(q, "_distproc_waiters", None)
        if lq is None or lq.loop is not self.loop:
            lq = LoopQueue(q, self.loop)
            q._distproc_waiters = lq
        return lq

    def encode(self, msg: tuple[str, Any]) -> bytes:
        try:
            return self.codec.dumps(msg)
        except Exception:
            return self.codec.dumps((UNSERIALIZABLE, traceback.format_exc()))

    def decode(self, data: bytes) -> Any:
        _tls.server = self
        try:
            return self.codec.loads(data)
        finally:
            _tls.server = None

    def result_message(self, entry: Entry, methodname: str, result: Any) -> tuple[str, Any]:
        typeid = entry.method_to_typeid.get(methodname) if entry.method_to_typeid else None
        if typeid:
            ident, exposed = self.add_object(typeid, result)
            return PROXY, (exposed, Token(typeid, self.address, ident))
        return RETURN, result


def _traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _not_exposed(methodname: str, obj: Any, exposed: tuple[str, ...]) -> str:
    return (
        "Traceback (most recent call last):\n"
        f"AttributeError: method {methodname!r} of {type(obj)!r} object is not in "
        f"exposed={exposed!r}\n"
    )


_HANDSHAKE_SEND_RESPONSE, _HANDSHAKE_AWAIT_CHALLENGE, _HANDSHAKE_AWAIT_WELCOME = range(3)
_FIRST_REQUEST, _CHANNEL, _CLOSING = range(3, 6)


class _Call:
    """One object call in flight on a channel (the :class:`~.queues.PendingCall`)."""

    __slots__ = ("cancel", "conn", "entry", "methodname")

    def __init__(self, conn: _Connection, entry: Entry, methodname: str) -> None:
        self.conn = conn
        self.entry = entry
        self.methodname = methodname
        self.cancel: Callable[[], None] | None = None

    def reply(self, value: Any) -> None:
        server = self.conn.server
        try:
            msg = server.result_message(self.entry, self.methodname, value)
        except Exception as exc:
            msg = (TRACEBACK, _traceback_text(exc))
        self.conn.finish(self, server.encode(msg))

    def fail(self, exc: BaseException) -> None:
        self.conn.finish(self, self.conn.server.encode((ERROR, exc)))

    def on_cancel(self, callback: Callable[[], None]) -> None:
        self.cancel = callback


class _Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.state = _HANDSHAKE_SEND_RESPONSE
        self.decoder = FrameDecoder(HANDSHAKE_MAX_FRAME)
        self.challenge = b""
        self.timer: asyncio.TimerHandle | None = None
        self.name = ""
        self.requests: deque[Any] = deque()
        self.inflight: _Call | None = None
        self.sticky: Worker | None = None

    # -------------------------------------------------------------- transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.server.connections.add(self)
        loop = self.server.loop
        assert loop is not None
        self.timer = loop.call_later(self.server.config.handshake_timeout, self._handshake_timeout)
        self.challenge = handshake.make_challenge()
        self.send(handshake.CHALLENGE + self.challenge)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.state = _CLOSING
        if self.timer is not None:
            self.timer.cancel()
        call, self.inflight = self.inflight, None
        if call is not None and call.cancel is not None:
            call.cancel()
        self.requests.clear()
        if self.sticky is not None:
            self.sticky.stop()
            self.sticky = None

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        decoder.append(data)
        while self.state != _CLOSING:
            try:
                frame = decoder.next_frame()
            except ProtocolError as exc:
                log.warning("dropping connection from %s: %s", self.peer, exc)
                self.abort()
                return
            if frame is None:
                return
            self.frame_received(frame)

    def send(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines((encode_header(len(payload)), payload))

    def close(self, exc: BaseException | None = None) -> None:
        self.state = _CLOSING
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.state = _CLOSING
        if self.transport is not None:
            self.transport.abort()

    def _handshake_timeout(self) -> None:
        if self.state < _FIRST_REQUEST:
            log.info(
                "dropping connection from %s: no handshake within %ss",
                self.peer,
                self.server.config.handshake_timeout,
            )
            self.abort()

    # -------------------------------------------------------------- handshake
    def frame_received(self, frame: bytes) -> None:
        state = self.state
        if state == _CHANNEL:
            self.requests.append(frame)
            if self.inflight is None:
                self.next_request()
        elif state == _FIRST_REQUEST:
            self.first_request(frame)
        else:
            self.handshake_step(frame)

    def handshake_step(self, frame: bytes) -> None:
        server = self.server
        allow_md5 = server.config.allow_md5
        try:
            if self.state == _HANDSHAKE_SEND_RESPONSE:
                try:
                    handshake.verify_response(
                        server.authkey, self.challenge, frame, allow_md5=allow_md5
                    )
                except AuthenticationError:
                    self.send(handshake.FAILURE)
                    raise
                self.send(handshake.WELCOME)
                self.state = _HANDSHAKE_AWAIT_CHALLENGE
            elif self.state == _HANDSHAKE_AWAIT_CHALLENGE:
                if not frame.startswith(handshake.CHALLENGE):
                    raise AuthenticationError("protocol error: expected a challenge")
                message = frame[len(handshake.CHALLENGE) :]
                self.send(handshake.create_response(server.authkey, message, allow_md5=allow_md5))
                self.state = _HANDSHAKE_AWAIT_WELCOME
            else:
                if frame != handshake.WELCOME:
                    raise AuthenticationError("the client rejected the server's digest")
                if self.timer is not None:
                    self.timer.cancel()
                self.decoder.max_size = server.config.max_frame
                self.state = _FIRST_REQUEST
        except AuthenticationError as exc:
            log.warning("authentication failed for %s: %s", self.peer, exc)
            self.close()

    # --------------------------------------------------------------- requests
    def parse(self, frame: bytes) -> tuple[Any, str, Any, Any] | None:
        try:
            request = self.server.decode(frame)
            ident, methodname, args, kwds = request
            if not isinstance(methodname, str):
                raise TypeError(f"method name must be a str, not {type(methodname).__name__}")
            args = tuple(args)
            kwds = dict(kwds)
        except (Exception, SystemExit) as exc:  # unpickling runs the peer's choice of code
            log.warning("bad request from %s: %s", self.peer, exc)
            self.send(self.server.encode((TRACEBACK, _traceback_text(exc))))
            return None
        return ident, methodname, args, kwds

    def first_request(self, frame: bytes) -> None:
        request = self.parse(frame)
        if request is None:
            self.close()
            return
        _, methodname, args, kwds = request
        server = self.server
        if methodname == "accept_connection":
            self.name = str(args[0]) if args else ""
            self.state = _CHANNEL
            self.send(server.encode((RETURN, None)))
            return
        self.state = _CLOSING
        if methodname == "shutdown":
            try:
                server.shutdown(self)
            except Exception:
                log.exception("error while shutting down")
            self.send(server.encode((RETURN, None)))
            self.close()
            server.stop()
            return
        if methodname not in server.public:
            text = (
                "Traceback (most recent call last):\n"
                f"AttributeError: {methodname!r} is not a server method\n"
            )
            self.send(server.encode((TRACEBACK, text)))
            self.close()
            return
        func = getattr(server, methodname)

        def run() -> bytes:
            try:
                msg: tuple[str, Any] = (RETURN, func(self, *args, **kwds))
            except Exception as exc:
                msg = (TRACEBACK, _traceback_text(exc))
            return server.encode(msg)

        if methodname in server.loop_methods:
            self.send(run())
            self.close()
        else:
            self.run_off_loop(run, then_close=True)

    def run_off_loop(
        self,
        job: Callable[[], bytes],
        *,
        then_close: bool = False,
        call: _Call | None = None,
        sticky: bool = False,
    ) -> None:
        loop = self.server.loop
        assert loop is not None

        def done(payload: bytes) -> None:
            if call is not None:
                self.finish(call, payload)
            else:
                self.send(payload)
            if then_close:
                self.close()

        def work() -> None:
            try:
                payload = job()
            except BaseException as exc:  # SystemExit and friends from user code
                payload = self.server.encode((TRACEBACK, _traceback_text(exc)))
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to answer
                loop.call_soon_threadsafe(done, payload)

        if sticky:
            if self.sticky is None:
                self.sticky = Worker(f"distproc-conn-{self.name or id(self)}")
            self.sticky.submit(work)
        else:
            self.server.pool.submit(work)

    def next_request(self) -> None:
        while self.requests and self.inflight is None and self.state == _CHANNEL:
            request = self.parse(self.requests.popleft())
            if request is not None:
                self.call(*request)

    def finish(self, call: _Call, payload: bytes) -> None:
        if self.inflight is not call:
            return  # cancelled: the client is gone
        self.inflight = None
        self.send(payload)
        if self.requests:
            self.next_request()

    def call(
        self, ident: Any, methodname: str, args: tuple[Any, ...], kwds: dict[str, Any]
    ) -> None:
        server = self.server
        try:
            entry = server.table.get(ident)
        except KeyError as exc:
            self.send(server.encode((TRACEBACK, _traceback_text(exc))))
            return
        obj = entry.obj
        if methodname not in entry.exposed:
            if methodname == "#GETVALUE":
                msg: tuple[str, Any] = (RETURN, obj)
            elif methodname in ("__str__", "__repr__"):
                try:
                    msg = (RETURN, str(obj) if methodname == "__str__" else repr(obj))
                except Exception as exc:
                    msg = (TRACEBACK, _traceback_text(exc))
            else:
                msg = (TRACEBACK, _not_exposed(methodname, obj, entry.exposed_order))
            self.send(server.encode(msg))
            return
        call = _Call(self, entry, methodname)
        self.inflight = call
        try:
            if is_loop_servable(obj):
                if methodname in ("get", "put"):
                    getattr(server.loop_queue(obj), methodname)(call, args, kwds)
                    return
                if methodname in _QUEUE_INLINE:
                    call.reply(getattr(obj, methodname)(*args, **kwds))
                    return
            elif methodname in INLINE_METHODS.get(type(obj), ()):
                call.reply(getattr(obj, methodname)(*args, **kwds))
                return
        except Exception as exc:
            call.fail(exc)
            return

        def job() -> bytes:
            try:
                result = getattr(obj, methodname)(*args, **kwds)
            except Exception as exc:
                return server.encode((ERROR, exc))
            try:
                msg = server.result_message(entry, methodname, result)
            except Exception as exc:
                msg = (TRACEBACK, _traceback_text(exc))
            return server.encode(msg)

        self.run_off_loop(job, call=call, sticky=isinstance(obj, _STICKY_TYPES))
