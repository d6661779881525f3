"""The server: one asyncio event loop that owns every socket.

This module holds the :class:`Server`: its socket, its loop, its object table
and the *server methods* (``create``, ``incref``, ``decref``, ...).  Each
connection is a :class:`~.connection.ServerConnection`, which runs the
handshake and then hands its frames to a session: the stdlib's protocol
(:mod:`.stdlib_session`) or, with a distproc peer, the native one
(:mod:`.native_session`).  Where each object call runs is decided in :mod:`.calls`.
Those modules see the server only through :class:`~.context.ServerContext`,
which it implements.

Bad input never costs other clients anything: a frame over the limit is
refused from its length prefix, garbage fails the handshake, a silent peer is
dropped after ``handshake_timeout``, and a client that disconnects has its
pending calls cancelled.  What one peer may hold (connections still in the
handshake, buffered requests, calls, threads, decoded values) is bounded by
:class:`~.config.ServerConfig`, and the log lines a peer can cause are
rate-limited (:mod:`.lograte`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import queue
import socket
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from ..addresses import format_address, listen_on
from ..callcontext import context
from ..errors import ConnectionLostError
from ..spinning import new_event_loop
from ..wire import same_host
from ..wire.codecs import BytesLike, Codec
from ..wire.handshake import FLAG_LOCAL, FLAG_PICKLE, Agreement, Handshake, make_marker
from ..wire.messages import KIND_PROXY, KIND_RETURN, KIND_TRACEBACK, KIND_UNSERIALIZABLE, Token
from ..wire.serializers import get_codec
from .calls import run_off_loop, traceback_text
from .config import ServerConfig
from .connection import ServerConnection
from .context import Message, Session
from .lograte import LogLimiter
from .loop_service import StatusReporter
from .native_session import NativeSession
from .objects import Entry, ObjectTable, public_methods
from .queues import BATCH_METHODS, LoopQueue, is_loop_servable
from .stdlib_session import StdlibSession
from .sync_types import Array, Namespace, Value
from .threads import ElasticPool

__all__ = ["CHEAP_CONSTRUCTORS", "Listener", "Server"]

log = logging.getLogger("distproc.server")

#: Registry entries: typeid -> (callable, exposed, method_to_typeid, proxytype).
Registry = dict[str, tuple[Any, Any, Any, Any]]

#: Constructors that cannot block, so ``create`` runs them on the loop (no thread hop).
CHEAP_CONSTRUCTORS: tuple[Any, ...] = (
    queue.Queue,
    queue.LifoQueue,
    queue.PriorityQueue,
    queue.SimpleQueue,
    list,
    dict,
    threading.Event,
    threading.Lock,
    threading.RLock,
    threading.Semaphore,
    threading.BoundedSemaphore,
    threading.Condition,
    threading.Barrier,
    Namespace,
    Value,
    Array,
)


def _address_text(address: Any) -> str:
    """``HOST:PORT`` (``[HOST]:PORT`` for IPv6), a socket path, or a placeholder."""
    if isinstance(address, (str, bytes)):
        return format_address(address) or "unix socket"
    return format_address(address) if address else "?"


def _not_a_server_method(method: str) -> str:
    return (
        "Traceback (most recent call last):\n"
        f"AttributeError: {method!r} is not a server method\n"
    )


def _peer_key(peer: Any) -> Any:
    """What connections from one peer share: its IP address (a Unix socket's peers are one)."""
    if isinstance(peer, tuple) and peer:
        return peer[0]
    return "local"


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class Listener:
    """The server's listening socket, as ``Server.listener``: what the stdlib's is
    (a ``multiprocessing.connection.Listener``) to programs that hold a server
    they will not serve: its ``address``, and ``close()``, which frees the port.

    The server accepts connections itself, on its loop; a listener that is
    closed cannot be served.
    """

    def __init__(self, sock: socket.socket, address: Any) -> None:
        self._socket = sock
        self._address = address

    @property
    def address(self) -> Any:
        return self._address

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or the server has stopped)."""
        return self._socket.fileno() == -1

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        "status",
    ]
    #: Server methods cheap enough to run on the loop.
    loop_methods = frozenset(
        {"dummy", "incref", "decref", "get_methods", "debug_info", "number_of_objects", "status"}
    )

    def __init__(
        self,
        registry: Registry,
        address: Any,
        authkey: bytes,
        serializer: str,
        *,
        config: ServerConfig | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        """``sock``: a socket already listening (see :func:`~distproc.addresses.listen_on`)
        to serve instead of binding ``address``; the server closes it."""
        if not isinstance(authkey, bytes):
            raise TypeError(f"Authkey {authkey!r} is type {type(authkey)!s}, not bytes")
        self.registry = registry
        self.authkey = authkey
        self.serializer = serializer
        #: The codec of the stdlib protocol; ``None`` when only native peers are served.
        self.codec: Codec | None = None if serializer == "native" else get_codec(serializer)
        #: The codecs of native sessions, shared by every connection: they keep
        #: nothing per connection (a pickle codec keeps a pickler per thread),
        #: and an idle connection costs less without one of its own.
        self._session_codecs: dict[str, Codec] = {}
        #: Whether pickle may travel on native connections (both ends must allow it).
        self.allow_pickle = serializer == "pickle"
        self.config = config or ServerConfig()
        if self.config.tls is not None:
            self.config.tls.server_context()  # unreadable TLS files are refused before binding
        #: Rate-limits the log lines that peers can cause.
        self.limiter = LogLimiter(log)
        #: Connections in the handshake, by peer address, and all of them oldest
        #: first (see :meth:`admit`).
        self.handshaking: collections.Counter[Any] = collections.Counter()
        self._handshaking: dict[ServerConnection, None] = {}
        if sock is None:
            sock = listen_on(("127.0.0.1", 0) if address is None else address, self.config.backlog)
        self._sock = sock
        name = self._sock.getsockname()
        self.address: Any = name if isinstance(name, str) else (name[0], name[1])
        #: The listening socket, as the stdlib's ``Server.listener``.
        self.listener = Listener(self._sock, self.address)
        #: The same-host Unix socket's name while it is served (see :mod:`distproc.wire.same_host`).
        self.local_address: str | None = None
        self.table = ObjectTable()
        self.pool = ElasticPool()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connections: set[ServerConnection] = set()
        #: References of native sessions whose connection dropped, by session id.
        self.orphans: dict[bytes, tuple[collections.Counter[str], asyncio.TimerHandle]] = {}
        self.started_at = time.monotonic()
        #: Objects whose ``__distproc_status__()`` ``status`` reports even when no
        #: client holds them (those in the table that define it are reported too).
        self.services: list[StatusReporter] = []
        #: Called on the loop's thread once the socket is served, before ``started`` is set.
        self.on_start: list[Callable[[], None]] = []
        #: Awaited on the loop once the connections are closed, before the loop closes
        #: (a part that runs on the loop, such as the dashboard, stops there).
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        self.started = threading.Event()
        self.stopped = threading.Event()
        self._stop_requested = False

    # ------------------------------------------------------------------ running
    def serve(self) -> None:
        """Run until :meth:`stop`, a ``shutdown`` request or Ctrl-C; then return."""
        if self.listener.closed:
            raise OSError(
                errno.EBADF, f"cannot serve {_address_text(self.address)}: its listener is closed"
            )
        loop = new_event_loop()
        loop.set_exception_handler(self._loop_exception)
        self.loop = loop
        local_srv: asyncio.AbstractServer | None = None
        try:
            stop = loop.create_future()
            self._stop_future = stop
            # The Unix socket first: a TCP client accepted before it exists would not be offered it.
            local_srv = self._serve_local(loop)
            tls = self.config.tls
            srv: Any  # an asyncio server, or a TLSAcceptor: both close()
            if tls is None:
                srv = loop.run_until_complete(
                    loop.create_server(
                        lambda: ServerConnection(self), sock=self._sock,
                        backlog=self.config.backlog,
                    )
                )
            else:
                from .tls_accept import TLSAcceptor  # ssl only for servers that use TLS

                self._sock.listen(self.config.backlog)  # as create_server's backlog=
                factory = lambda: ServerConnection(self)  # noqa: E731
                srv = TLSAcceptor(loop, self._sock, factory, tls, self.config.handshake_timeout)
            self.started_at = time.monotonic()
            for callback in self.on_start:
                callback()
            self.started.set()
            # stop() sets the flag before it looks at `started`: one of the two sees the other.
            if self._stop_requested:
                stop.set_result(None)
            try:
                with contextlib.suppress(KeyboardInterrupt):
                    loop.run_until_complete(stop)
            finally:
                srv.close()
                if local_srv is not None:
                    local_srv.close()
                loop.run_until_complete(self._close_connections())
                for stopping in self.on_stop:
                    loop.run_until_complete(stopping())
        finally:
            if local_srv is not None:
                local_srv.close()  # again, in case the TCP server could not be made
                self.local_address = None
            self.pool.shutdown()
            loop.close()
            self._sock.close()
            self.limiter.flush()
            self.stopped.set()

    def _serve_local(self, loop: asyncio.AbstractEventLoop) -> asyncio.AbstractServer | None:
        """Listen on a same-host Unix socket too, if this server listens on TCP."""
        if not (
            self.config.local_socket
            and self.config.tls is None  # a Unix socket would let a peer in without a certificate
            and same_host.enabled()
            and self._sock.family in (socket.AF_INET, socket.AF_INET6)
        ):
            return None
        name = same_host.new_name()
        try:
            sock = listen_on(name, self.config.backlog)
        except OSError as exc:
            log.info("no same-host socket: %s", exc)
            return None
        try:
            srv = loop.run_until_complete(
                loop.create_server(
                    lambda: ServerConnection(self), sock=sock, backlog=self.config.backlog
                )
            )
        except BaseException:
            sock.close()
            raise
        self.local_address = name
        return srv

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's errors, rate-limited: out of descriptors, every ``accept()`` fails."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and "accept" in str(context.get("message", "")):
            self.limiter.log(
                logging.ERROR,
                "accept",
                "cannot accept connections: %s (raise the limit of open files, ulimit -n, "
                "or lower ServerConfig.max_handshaking)",
                exc,
            )
            return
        loop.default_exception_handler(context)

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

    def creates_on_loop(self, typeid: Any) -> bool:
        """Whether ``create(typeid)`` may run on the loop: its constructor cannot block."""
        entry = self.registry.get(typeid) if isinstance(typeid, str) else None
        return entry is not None and any(entry[0] is c for c in CHEAP_CONSTRUCTORS)

    def add_object(self, typeid: str, obj: Any) -> tuple[str, tuple[str, ...]]:
        """Put ``obj`` in the table under ``typeid`` (refcount 1)."""
        _, exposed, method_to_typeid, _ = self.registry[typeid]
        if exposed is None:
            exposed = public_methods(obj)
            if is_loop_servable(obj):
                exposed += BATCH_METHODS
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

    def status(self, c: Any) -> dict[str, Any]:
        """What this server holds and who is connected, as JSON-ready data.

        ``services`` has the ``__distproc_status__()`` of every object that
        defines one (the task service does); see ``distproc status``.
        """
        now = time.monotonic()
        objects: list[dict[str, Any]] = []
        reporters: dict[int, tuple[str, Any]] = {id(obj): ("", obj) for obj in self.services}
        for ident, entry, refcount in self.table.snapshot():
            objects.append({"id": ident, "typeid": entry.typeid, "refcount": refcount})
            if callable(getattr(type(entry.obj), "__distproc_status__", None)):
                reporters.setdefault(id(entry.obj), (entry.typeid, entry.obj))
        services: list[Any] = []
        for typeid, obj in reporters.values():  # each object once, however many refer to it
            try:
                services.append(obj.__distproc_status__())
            except Exception as exc:
                log.exception("__distproc_status__ of %r failed", obj)
                services.append({"kind": "error", "typeid": typeid, "error": _one_line(exc)})
        clients = [
            {
                "peer": _address_text(conn.peer),
                "protocol": conn.protocol,
                "connected_for": now - conn.since,
            }
            for conn in sorted(self.connections, key=lambda conn: conn.since)
        ]
        return {
            "kind": "manager",
            "address": _address_text(self.address),
            "pid": os.getpid(),
            "uptime": now - self.started_at,
            "objects": objects,
            "clients": clients,
            "services": services,
        }

    def accept_connection(self, c: Any, name: str) -> None:
        """Handled by the connection itself; listed for the stdlib's ``public``."""

    def shutdown(self, c: Any) -> None:
        """Handled by the connection itself (it replies first, then stops the server)."""

    def shutdown_request(self, c: Any) -> tuple[str, Any]:
        """Answer a ``shutdown`` request: run :meth:`shutdown`, then stop the loop."""
        try:
            self.shutdown(c)
        except Exception:
            log.exception("error while shutting down")
        self.stop()
        return (KIND_RETURN, None)

    # ------------------------------------------------------------- connections
    def admit(self, conn: ServerConnection) -> bool:
        """Count ``conn`` among the connections in the handshake.

        Past ``max_handshaking`` in total, or ``max_handshaking_per_peer`` from
        its peer, the *oldest* such connection is dropped to make room: a peer
        that completes the handshake does so in a round trip or two, so what
        has waited longest is what a flood left behind.  ``False``: refuse
        ``conn`` itself (a limit of 0).
        """
        config = self.config
        key = _peer_key(conn.peer)
        for limit, name, of_peer in (
            (config.max_handshaking_per_peer, "max_handshaking_per_peer", True),
            (config.max_handshaking, "max_handshaking", False),
        ):
            count = self.handshaking[key] if of_peer else len(self._handshaking)
            if count < limit:
                continue
            if limit <= 0:
                return False
            oldest = next(
                c for c in self._handshaking if not of_peer or _peer_key(c.peer) == key
            )
            self.limiter.warning(
                "admit",
                "dropping the connection from %s, in the handshake for %.1fs: too many "
                "connections in the handshake (ServerConfig.%s)",
                oldest.peer,
                time.monotonic() - oldest.since,
                name,
            )
            oldest.abort()
            oldest.leave_handshaking()
        self.handshaking[key] += 1
        self._handshaking[conn] = None
        return True

    def left_handshake(self, conn: ServerConnection) -> None:
        """``conn``, counted by :meth:`admit`, is through the handshake or gone."""
        key = _peer_key(conn.peer)
        self._handshaking.pop(conn, None)
        self.handshaking[key] -= 1
        if self.handshaking[key] <= 0:
            del self.handshaking[key]

    def handshake_for(self, sock: socket.socket | None) -> Handshake:
        """The server's side of the handshake with the peer at the other end of ``sock``:
        the same-host socket is offered to peers on loopback."""
        flags = FLAG_PICKLE if self.allow_pickle else 0
        if (
            self.local_address is not None
            and sock is not None
            and same_host.peer_on_loopback(sock)
        ):
            flags |= FLAG_LOCAL
        return Handshake(
            self.authkey, server=True, allow_md5=self.config.allow_md5, marker=make_marker(flags)
        )

    def session_for(self, conn: ServerConnection, agreement: Agreement) -> Session | None:
        """The protocol ``conn`` speaks after the handshake (``None``: the peer is refused)."""
        if agreement.native and self.serializer != "xmlrpclib":
            codec = self.session_codec("pickle" if agreement.pickle else "native")
            session = NativeSession(conn, codec)
            if agreement.same_host and self.local_address is not None:
                conn.send(same_host.name_frame(self.local_address))
            return session
        if self.codec is None:
            log.warning(
                "refusing %s: this server speaks only the native protocol (serializer='native')",
                conn.peer,
            )
            return None
        return StdlibSession(conn, self.codec)

    def call_server_method(
        self,
        conn: Any,
        method: str,
        args: tuple[Any, ...],
        kwds: dict[str, Any],
        done: Callable[[Message], None],
    ) -> None:
        """Run server method ``method`` for ``conn``; hand its reply to ``done`` on the loop.

        It runs on the loop when it cannot block (:attr:`loop_methods`, and
        ``create`` of a type in :data:`CHEAP_CONSTRUCTORS`), else on the pool.
        ``shutdown`` replies first, then stops the server.
        """
        if method not in self.public or method == "accept_connection":
            done((KIND_TRACEBACK, _not_a_server_method(method)))
            return
        if method == "shutdown":
            done(self.shutdown_request(conn))
            return
        func = getattr(self, method)

        def job() -> Message:
            try:
                return (KIND_RETURN, func(conn, *args, **kwds))
            except Exception as exc:
                return (KIND_TRACEBACK, traceback_text(exc))

        if method in self.loop_methods or (
            method == "create" and args and self.creates_on_loop(args[0])
        ):
            done(job())
        else:
            run_off_loop(self, job, done, gate=getattr(conn, "gate", None))

    # ------------------------------------------------------------------ helpers
    def loop_queue(self, q: Any) -> LoopQueue:
        assert self.loop is not None
        lq: LoopQueue | None = getattr(q, "_distproc_waiters", None)
        if lq is None or lq.loop is not self.loop:
            lq = LoopQueue(q, self.loop)
            q._distproc_waiters = lq
        return lq

    def session_codec(self, serializer: str) -> Codec:
        """The codec that native sessions use for ``serializer`` ('pickle' or 'native')."""
        codec = self._session_codecs.get(serializer)
        if codec is None:
            codec = self._session_codecs[serializer] = get_codec(serializer)
            if serializer == "native":  # what a few bytes may expand to (see ServerConfig)
                codec.max_items = self.config.max_decoded_items  # type: ignore[attr-defined]  # only the native codec has the bound
        return codec

    def encode_parts(self, msg: Any, codec: Codec | None = None) -> list[BytesLike]:
        """``msg`` encoded, as parts to write in order (large payloads are not copied);
        a message that cannot be encoded becomes an ``#UNSERIALIZABLE`` reply."""
        codec = codec or self.codec
        assert codec is not None
        try:
            return codec.dumps_parts(msg)
        except Exception:
            return [codec.dumps((KIND_UNSERIALIZABLE, traceback.format_exc()))]

    def decode(self, data: BytesLike, codec: Codec | None = None) -> Any:
        codec = codec or self.codec
        assert codec is not None
        context.server = self
        try:
            return codec.loads(data)
        finally:
            context.server = None

    def result_message(self, entry: Entry, methodname: str, result: Any) -> tuple[str, Any]:
        typeid = entry.method_to_typeid.get(methodname) if entry.method_to_typeid else None
        if typeid:
            ident, exposed = self.add_object(typeid, result)
            return KIND_PROXY, (exposed, Token(typeid, self.address, ident))
        return KIND_RETURN, result
