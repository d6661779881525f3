"""Connecting to a server: the handshake, the upgrade and the same-host move, written once.

Every client connection begins the same way:

1. The handshake (:class:`~distproc.wire.handshake.Handshake`) over TCP, or a
   Unix socket path, within a timeout.  A peer that says nothing in that
   time, or says what no handshake starts with (an HTTP server), is no
   manager server: :class:`~distproc.errors.NotAServerError`, a
   :class:`~distproc.errors.ProtocolError`.
2. If both sides asked for it (see :mod:`distproc.wire.same_host`), the
   server names its same-host socket; the client connects there, runs the
   handshake again, checks that the socket is served like the TCP one, and
   leaves TCP once the server has closed its end (so that, when connecting is
   over, the server counts one connection).  If any of that fails, it stays on TCP.
3. Between distproc peers, a ``HELLO`` record with the client's session id,
   by which the server gives back the references of a dropped connection.

These steps are one *plan*, :func:`plan`: a generator that yields what to do
(:class:`Send`, :class:`Receive`, :class:`OpenSameHost`, :class:`Close`) and
is sent what came of it, or is thrown the error.  It does no I/O itself.  Two
drivers carry it out: :func:`connect` on blocking sockets (the multiplexer,
:func:`~.connection.Client`) and :func:`connect_async` on asyncio streams
(:mod:`distproc.aio`).  Each driver opens its connection to the server in
one place (:func:`open_socket`, :func:`_open_stream`), where TLS goes
(:mod:`distproc.tls`), under the handshake.  A TLS connection does not
move to the same-host socket, which has no TLS: the server, which offers the
move, does not offer it when it requires TLS.  A failed TLS connection, and
a TLS server's word that it requires TLS, raise
:class:`~distproc.errors.TLSError` with a message saying what happened.

The handshake timeout is ``DISTPROC_HANDSHAKE_TIMEOUT`` seconds
(:data:`HANDSHAKE_TIMEOUT` when unset), unless the caller gives one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..addresses import format_address
from ..errors import ConnectionLostError, DistprocError, NotAServerError, ProtocolError, TLSError
from ..wire import same_host
from ..wire.codecs import Codec, PickleCodec
from ..wire.framing import (
    DEFAULT_MAX_FRAME,
    HANDSHAKE_MAX_FRAME,
    FrameDecoder,
    encode_header,
    recv_frame,
    send_frame,
)
from ..wire.handshake import FLAG_LOCAL, Agreement, Handshake, make_marker
from ..wire.records import HELLO, record

if TYPE_CHECKING:
    from ..tls import TLSConfig

__all__ = [
    "ENV",
    "HANDSHAKE_TIMEOUT",
    "AsyncStream",
    "codec_for",
    "connect",
    "connect_async",
    "handshake_timeout",
    "open_socket",
]

log = logging.getLogger("distproc.client")

ENV = "DISTPROC_HANDSHAKE_TIMEOUT"
#: Seconds a server has to complete the handshake, unless told otherwise.
HANDSHAKE_TIMEOUT = 10.0

#: The channels of a plan: the first connection, and the same-host socket.
FIRST, SAME_HOST = 0, 1


@dataclass(frozen=True)
class Send:
    """Write ``frame`` on ``channel``."""

    channel: int
    frame: bytes


@dataclass(frozen=True)
class Receive:
    """Read the next frame of ``channel`` (refused if over ``limit`` bytes); send it to the plan."""

    channel: int
    limit: int


@dataclass(frozen=True)
class OpenSameHost:
    """Connect to the server's same-host socket ``name``: channel :data:`SAME_HOST`."""

    name: str


@dataclass(frozen=True)
class Close:
    """Close ``channel``; with ``drain``, once the server has closed its end."""

    channel: int
    drain: bool = False


Op = Send | Receive | OpenSameHost | Close


@dataclass(frozen=True)
class Connected:
    """How a plan ended: the channel to go on with, and what the handshake agreed."""

    channel: int
    agreement: Agreement


Plan = Generator[Op, Any, Connected]


def handshake_timeout(timeout: float | None = None) -> float:
    """``timeout``, or the handshake timeout of this process (``DISTPROC_HANDSHAKE_TIMEOUT``)."""
    if timeout is not None:
        return timeout
    try:
        value = float(os.environ.get(ENV, "").strip() or HANDSHAKE_TIMEOUT)
    except ValueError:
        return HANDSHAKE_TIMEOUT
    return value if value > 0 else HANDSHAKE_TIMEOUT


def _handshake(channel: int, machine: Handshake) -> Generator[Op, Any, Agreement]:
    """Drive ``machine`` over ``channel`` until both sides are through."""
    for frame in machine.start():
        yield Send(channel, frame)
    while not machine.done:
        step = machine.receive((yield Receive(channel, HANDSHAKE_MAX_FRAME)))
        for frame in step.send:
            yield Send(channel, frame)
        if step.error is not None:
            raise step.error
    assert machine.agreement is not None
    return machine.agreement


def plan(
    where: str,
    authkey: bytes,
    *,
    flags: int | None,
    allow_md5: bool = True,
    session_id: bytes = b"",
    timeout: float = HANDSHAKE_TIMEOUT,
) -> Plan:
    """The steps of connecting (see the module docstring), for a driver to carry out.

    ``where`` names the server in messages.  ``flags`` are this side's upgrade
    flags (``None``: no marker, a client of the stdlib's protocol only);
    ``timeout`` is the one its driver enforces, for the messages.
    """
    marker = b"" if flags is None else make_marker(flags)
    machine = Handshake(authkey, server=False, allow_md5=allow_md5, marker=marker)
    try:
        agreement = yield from _handshake(FIRST, machine)
    except TimeoutError:
        raise NotAServerError(
            f"not a distproc or multiprocessing.managers server at {where}: no handshake "
            f"within {timeout:g}s (or a server that is stuck)"
        ) from None
    except EOFError:
        raise ConnectionLostError("the server closed the connection during the handshake") from None
    except ProtocolError as exc:
        if isinstance(exc, TLSError):
            raise
        raise NotAServerError(
            f"not a distproc or multiprocessing.managers server at {where}: {exc}"
        ) from None
    channel = FIRST
    if agreement.same_host:
        channel = yield from _move(authkey, flags or 0, allow_md5, agreement)
    if agreement.native:
        yield Send(channel, b"".join(record(HELLO, 0, blob=session_id)))
    return Connected(channel, agreement)


def _move(authkey: bytes, flags: int, allow_md5: bool, first: Agreement) -> Generator[Op, Any, int]:
    """Move to the same-host socket that the server names next; the channel to go on with."""
    name = same_host.parse_name_frame((yield Receive(FIRST, same_host.NAME_MAX)))
    try:
        yield OpenSameHost(name)
        machine = Handshake(
            authkey, server=False, allow_md5=allow_md5, marker=make_marker(flags & ~FLAG_LOCAL)
        )
        there = yield from _handshake(SAME_HOST, machine)
        assert first.peer_flags is not None  # a same-host move was agreed
        same_host.check_same_server(there.peer_flags, first.peer_flags)
    except (OSError, EOFError, DistprocError) as exc:
        yield Close(SAME_HOST)
        log.debug("staying on TCP: the same-host socket %r: %s", name, exc)
        return FIRST
    yield Close(FIRST, drain=True)
    return SAME_HOST


def codec_for(agreement: Agreement) -> Codec:
    """The codec of a native connection: pickle if both ends allow it, else the native codec."""
    if agreement.pickle:
        return PickleCodec()
    from ..wire.native import NativeCodec  # msgpack only for those who use it

    return NativeCodec()


class _Steps:
    """A :func:`plan` under way, for a driver: the next op, and how it ended."""

    def __init__(
        self,
        address: Any,
        authkey: bytes,
        flags: int | None,
        allow_md5: bool,
        session_id: bytes,
        timeout: float,
    ) -> None:
        #: How long each channel's ops may take.
        self.timeouts = {FIRST: timeout, SAME_HOST: same_host.TIMEOUT}
        self._plan = plan(
            format_address(address),
            authkey,
            flags=flags,
            allow_md5=allow_md5,
            session_id=session_id,
            timeout=timeout,
        )
        self._done: Connected | None = None

    @property
    def done(self) -> Connected:
        """How the plan ended (once :meth:`next` has returned ``None``)."""
        assert self._done is not None
        return self._done

    def next(self, outcome: Any = None, error: BaseException | None = None) -> Op | None:
        """Tell the plan what came of its last op (or throw it ``error``): its next op,
        or ``None`` once it is over.  What the plan raises, it raises from here."""
        try:
            return self._plan.throw(error) if error is not None else self._plan.send(outcome)
        except StopIteration as stop:
            self._done = stop.value
            return None


# ----------------------------------------------------------- blocking sockets
def open_socket(
    address: Any, timeout: float | None = None, tls: TLSConfig | None = None
) -> socket.socket:
    """A connected socket for a stdlib-style address, with TCP_NODELAY set; with ``tls``,
    through its TLS handshake (within ``timeout``, else :func:`handshake_timeout`)."""
    if isinstance(address, (str, bytes)):
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
    else:
        host, port = address[0], address[1]
        sock = socket.create_connection((host or "127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = _wrap(sock, host or "127.0.0.1", address, tls, handshake_timeout(timeout))
    sock.settimeout(None)
    return sock


def _wrap(
    sock: socket.socket, host: str, address: Any, tls: TLSConfig, limit: float
) -> socket.socket:
    from ssl import SSLError  # TLS modules only for those who use TLS

    from ..tls import explain
    try:
        sock.settimeout(limit)
        return tls.client_context().wrap_socket(
            sock, server_hostname=tls.server_hostname or host
        )
    except SSLError as exc:
        sock.close()
        raise TLSError(explain(exc, format_address(address))) from None
    except BaseException:
        sock.close()
        raise


def _tls_failed(
    exc: BaseException, address: Any, tls: TLSConfig | None, first: bool
) -> TLSError | None:
    """What an error after the TLS handshake means: a TLS 1.3 server refuses a client's
    certificate only then, which the client meets at its ``first`` read (the challenge)."""
    if tls is None:
        return None
    from ssl import SSLError

    from ..tls import explain, refused_after_handshake

    if isinstance(exc, SSLError):
        return TLSError(explain(exc, format_address(address)))
    if first and isinstance(exc, (EOFError, ConnectionResetError)):
        return TLSError(refused_after_handshake(format_address(address), tls))
    return None


def connect(
    address: Any,
    authkey: bytes,
    *,
    flags: int | None,
    allow_md5: bool = True,
    timeout: float | None = None,
    session_id: bytes = b"",
    tls: TLSConfig | None = None,
) -> tuple[socket.socket, Agreement]:
    """Connect to ``address`` and carry out :func:`plan` on blocking sockets.

    ``timeout`` bounds the connect and the handshake; without it, the connect
    takes what the system gives it and the handshake :func:`handshake_timeout`.
    Returns the socket to go on with (blocking, no timeout) and the agreement.
    """
    limit = handshake_timeout(timeout)
    sock = open_socket(address, timeout, tls)
    if flags is not None and tls is None and same_host.client_asks(sock):
        flags |= FLAG_LOCAL
    socks: dict[int, socket.socket] = {FIRST: sock}
    steps = _Steps(address, authkey, flags, allow_md5, session_id, limit)
    try:
        sock.settimeout(limit)
        op, first = steps.next(), True
        while op is not None:
            try:
                outcome = _carry_out(op, socks, steps.timeouts)
            except (OSError, EOFError) as exc:
                op = steps.next(error=_tls_failed(exc, address, tls, first) or exc)
            else:
                op = steps.next(outcome)
            first = False
        kept = socks.pop(steps.done.channel)
        kept.settimeout(None)
        return kept, steps.done.agreement
    finally:
        for other in socks.values():
            other.close()


def _carry_out(op: Op, socks: dict[int, socket.socket], timeouts: dict[int, float]) -> Any:
    if isinstance(op, Send):
        send_frame(socks[op.channel], op.frame)
    elif isinstance(op, Receive):
        return recv_frame(socks[op.channel], op.limit)
    elif isinstance(op, OpenSameHost):
        moved = socks[SAME_HOST] = socket.socket(socket.AF_UNIX)
        moved.settimeout(timeouts[SAME_HOST])
        moved.connect(op.name)
    else:
        sock = socks.pop(op.channel)  # opened before it connects: there even if that failed
        if op.drain:
            _close_when_drained(sock, timeouts[SAME_HOST])
        else:
            sock.close()
    return None


def _close_when_drained(sock: socket.socket, timeout: float) -> None:
    """Close ``sock`` once the server has closed its end, so that, when this
    returns, the server no longer counts it among its connections."""
    try:
        sock.settimeout(timeout)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass
    except OSError:
        pass
    finally:
        sock.close()


# ------------------------------------------------------------ asyncio streams
class AsyncStream:
    """Frames over an asyncio stream pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(HANDSHAKE_MAX_FRAME)
        self.frames: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.writer.write(encode_header(len(payload)) + payload)

    async def recv(self) -> bytes:
        while not self.frames:
            data = await self.reader.read(1 << 18)
            if not data:
                raise ConnectionLostError("the server closed the connection")
            self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0)


async def _open_stream(address: Any, tls: TLSConfig | None, limit: float) -> AsyncStream:
    host, port = address[0] or "127.0.0.1", address[1]
    if tls is None:
        return AsyncStream(*await asyncio.open_connection(host, port))
    from ssl import SSLError

    from ..tls import explain
    try:
        return AsyncStream(
            *await asyncio.open_connection(
                host,
                port,
                ssl=tls.client_context(),
                server_hostname=tls.server_hostname or host,
                ssl_handshake_timeout=limit,
            )
        )
    except SSLError as exc:
        raise TLSError(explain(exc, format_address(address))) from None


async def connect_async(
    address: Any,
    authkey: bytes,
    *,
    flags: int,
    allow_md5: bool = True,
    timeout: float | None = None,
    session_id: bytes = b"",
    tls: TLSConfig | None = None,
) -> tuple[AsyncStream, Agreement]:
    """Connect to ``address`` and carry out :func:`plan` on asyncio streams.

    Returns the stream to go on with, its frame limit raised to the default
    after the handshake, and the agreement.
    """
    limit = handshake_timeout(timeout)
    streams: dict[int, AsyncStream] = {FIRST: await _open_stream(address, tls, limit)}
    if tls is None and same_host.client_asks(streams[FIRST].writer.get_extra_info("socket")):
        flags |= FLAG_LOCAL
    steps = _Steps(address, authkey, flags, allow_md5, session_id, limit)
    try:
        op, first = steps.next(), True
        while op is not None:
            bound = steps.timeouts[_channel(op)]
            try:
                outcome = await asyncio.wait_for(
                    _carry_out_async(op, streams, steps.timeouts), bound
                )
            except asyncio.TimeoutError:
                op = steps.next(error=TimeoutError(f"timed out after {bound:g}s"))
            except (OSError, EOFError) as exc:
                op = steps.next(error=_tls_failed(exc, address, tls, first) or exc)
            else:
                op = steps.next(outcome)
            first = False
        kept = streams.pop(steps.done.channel)
        kept.decoder.max_size = DEFAULT_MAX_FRAME
        return kept, steps.done.agreement
    finally:
        for other in streams.values():
            other.writer.close()


def _channel(op: Op) -> int:
    return SAME_HOST if isinstance(op, OpenSameHost) else op.channel


async def _carry_out_async(
    op: Op, streams: dict[int, AsyncStream], timeouts: dict[int, float]
) -> Any:
    if isinstance(op, Send):
        streams[op.channel].send(op.frame)
    elif isinstance(op, Receive):
        stream = streams[op.channel]
        stream.decoder.max_size = op.limit
        return await stream.recv()
    elif isinstance(op, OpenSameHost):
        streams[SAME_HOST] = AsyncStream(*await asyncio.open_unix_connection(op.name))
    else:
        if op.channel not in streams:
            return None  # its opening failed
        stream = streams.pop(op.channel)
        if op.drain:
            stream.writer.write_eof()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                while await asyncio.wait_for(stream.reader.read(4096), timeouts[SAME_HOST]):
                    pass
        stream.writer.close()
    return None
