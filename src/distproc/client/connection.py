"""Blocking client connections in the stdlib's protocol.

One :class:`Connection` is one authenticated TCP (or Unix) socket that sends
and receives whole frames.  ``TCP_NODELAY`` is set and every frame goes out in
one write.  :func:`dispatch` makes one request and turns the reply into a
value or an exception, as ``multiprocessing.managers.dispatch`` does.
"""

from __future__ import annotations

import socket
from typing import Any

from ..errors import ConnectionLostError, RemoteError
from ..wire.codecs import Codec
from ..wire.framing import DEFAULT_MAX_FRAME, recv_frame, send_frame
from ..wire.messages import KIND_ERROR, KIND_RETURN, KIND_TRACEBACK, KIND_UNSERIALIZABLE
from ..wire.serializers import get_codec
from .connect import connect, open_socket

__all__ = ["Client", "Connection", "convert_to_error", "dispatch"]

Address = Any  # (host, port) or a filesystem path


class Connection:
    """An authenticated connection that sends and receives encoded messages."""

    def __init__(
        self, sock: socket.socket, codec: Codec, *, max_frame: int = DEFAULT_MAX_FRAME
    ) -> None:
        self._sock: socket.socket | None = sock
        self.codec = codec
        self.max_frame = max_frame

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
        self.send_bytes(self.codec.dumps(obj))

    def recv(self) -> Any:
        try:
            data = self.recv_bytes()
        except EOFError as exc:
            if isinstance(exc, ConnectionLostError):
                raise
            raise ConnectionLostError("the server closed the connection") from None
        except ConnectionResetError as exc:
            raise ConnectionLostError(f"the server closed the connection: {exc}") from None
        return self.codec.loads(data)

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
    codec = get_codec(serializer)
    if authkey is None:
        return Connection(open_socket(address, timeout), codec, max_frame=max_frame)
    sock, _ = connect(address, bytes(authkey), flags=None, allow_md5=allow_md5, timeout=timeout)
    return Connection(sock, codec, max_frame=max_frame)


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
