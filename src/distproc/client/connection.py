"""Blocking client connections in the stdlib's protocol.

One :class:`Connection` is one authenticated TCP (or Unix) socket that sends
and receives whole frames.  ``TCP_NODELAY`` is set and every frame goes out in
one write.  :func:`dispatch` makes one request and turns the reply into a
value or an exception, as ``multiprocessing.managers.dispatch`` does.

A Python 2.7 stdlib server reads pickle protocol 2 at most, and its handshake
is that of CPython 3.8-3.11: nothing tells it apart before the first request.
That request goes in our protocol; a 2.7 server cannot read it, and answers,
in protocol 2, that the protocol is unsupported (it has run nothing).  The
connection then connects again and sends the request in the protocol of that
answer, and this process writes to that address in it from then on (see
:class:`~distproc.wire.codecs.OlderPickleCodec`).  Servers that read our
protocol see nothing of this.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from ..errors import ConnectionLostError, RemoteError
from ..wire.codecs import Codec, PickleCodec, older_pickle_codec, pickle_protocol
from ..wire.framing import DEFAULT_MAX_FRAME, recv_frame, send_frame
from ..wire.messages import KIND_ERROR, KIND_RETURN, KIND_TRACEBACK, KIND_UNSERIALIZABLE
from ..wire.serializers import get_codec
from .connect import connect, open_socket

__all__ = ["Client", "Connection", "convert_to_error", "dispatch"]

Address = Any  # (host, port) or a filesystem path

#: Servers that could not read our pickle protocol, by address, and the one
#: they answered in (a Python 2.7 server: 2); see the module docstring.
_older_servers: dict[Any, int] = {}
#: What a connection's first request is before it is sent.
_UNSENT = object()


def _server_key(address: Address) -> Any:
    return tuple(address) if isinstance(address, list) else address


def _unread_protocol(codec: Codec, reply: bytes) -> int | None:
    """The protocol of ``reply``, if it says that the server cannot read ``codec``'s."""
    protocol = pickle_protocol(reply)
    if not isinstance(codec, PickleCodec) or protocol >= codec.protocol:
        return None
    try:
        kind, text = older_pickle_codec(protocol).loads(reply)
    except Exception:
        return None
    if kind == KIND_TRACEBACK and "unsupported pickle protocol" in str(text):
        return protocol
    return None


class Connection:
    """An authenticated connection that sends and receives encoded messages."""

    def __init__(
        self,
        sock: socket.socket,
        codec: Codec,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        redial: Callable[[], socket.socket] | None = None,
        address: Address = None,
    ) -> None:
        self._sock: socket.socket | None = sock
        self.codec = codec
        self.max_frame = max_frame
        #: Until the first reply, how to connect again to send the first request
        #: in an older pickle protocol (see the module docstring).
        self._redial = redial
        self._address = address
        self._first: Any = _UNSENT

    @property
    def closed(self) -> bool:
        return self._sock is None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise OSError("handle is closed")
        return self._sock

    def fileno(self) -> int:
        return self._socket().fileno()

    def send_bytes(self, data: bytes) -> None:
        send_frame(self._socket(), data)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        return recv_frame(self._socket(), self.max_frame if maxlength is None else maxlength)

    def send(self, obj: Any) -> None:
        if self._redial is not None and self._first is _UNSENT:
            self._first = obj
        self.send_bytes(self.codec.dumps(obj))

    def recv(self) -> Any:
        data = self._recv_reply()
        if self._redial is not None:
            data = self._first_reply(data)
        return self.codec.loads(data)

    def _recv_reply(self) -> bytes:
        try:
            return self.recv_bytes()
        except EOFError as exc:
            if isinstance(exc, ConnectionLostError):
                raise
            raise ConnectionLostError("the server closed the connection") from None
        except ConnectionResetError as exc:
            raise ConnectionLostError(f"the server closed the connection: {exc}") from None

    def _first_reply(self, data: bytes) -> bytes:
        """The reply to the first request, sent again in the server's older protocol
        if it could not read ours."""
        redial, self._redial = self._redial, None
        first, self._first = self._first, _UNSENT
        protocol = _unread_protocol(self.codec, data) if first is not _UNSENT else None
        if redial is None or protocol is None:
            return data
        _older_servers[_server_key(self._address)] = protocol
        self.codec = older_pickle_codec(protocol)
        self.close()  # the server closes it too, after such an answer
        self._sock = redial()
        self.send_bytes(self.codec.dumps(first))
        return self._recv_reply()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __del__(self) -> None:
        # A thread's proxy connection lives in thread-local storage and is
        # dropped, not closed, when the thread ends: close it quietly then.
        sock = self._sock
        if sock is not None:
            sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def Client(
    address: Address,
    authkey: bytes | None = None,
    *,
    serializer: str = "pickle",
    allow_md5: bool = True,
    max_frame: int = DEFAULT_MAX_FRAME,
    timeout: float | None = None,
) -> Connection:
    """Connect to a manager's server and run the authkey handshake (see :mod:`.connect`).

    ``timeout`` bounds the connect and the handshake (without it, the handshake
    has :func:`~.connect.handshake_timeout`).
    """

    def dial() -> socket.socket:
        if authkey is None:
            return open_socket(address, timeout)
        sock, _ = connect(address, bytes(authkey), flags=None, allow_md5=allow_md5, timeout=timeout)
        return sock

    older = _older_servers.get(_server_key(address)) if serializer == "pickle" else None
    codec = get_codec(serializer) if older is None else older_pickle_codec(older)
    redial = dial if serializer == "pickle" and older is None else None
    return Connection(dial(), codec, max_frame=max_frame, redial=redial, address=address)


def convert_to_error(kind: str, result: Any) -> BaseException:
    """The exception that a non-``#RETURN`` reply stands for."""
    if kind == KIND_ERROR:
        if isinstance(result, BaseException):
            return result
        return RemoteError(f"the server sent a non-exception as an error: {result!r}\n")
    if kind in (KIND_TRACEBACK, KIND_UNSERIALIZABLE):
        if not isinstance(result, str):
            return TypeError(f"Result {result!r} (kind '{kind}') type is {type(result)}, not str")
        if kind == KIND_UNSERIALIZABLE:
            return RemoteError(f"Unserializable message: {result}\n")
        return RemoteError(result)
    return ValueError(f"Unrecognized message type {kind!r}")


def dispatch(
    c: Connection, id: str | None, methodname: str, args: Any = (), kwds: Any = None
) -> Any:
    """Send one request on ``c`` and return its result or raise its error."""
    c.send((id, methodname, args, {} if kwds is None else kwds))
    kind, result = c.recv()
    if kind == KIND_RETURN:
        return result
    try:
        raise convert_to_error(kind, result)
    finally:
        del result
