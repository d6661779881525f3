"""A small, independent client of the managers wire protocol, for fault tests.

It is written from the protocol description (length-prefixed frames, the HMAC
challenge handshake, pickled ``(ident, methodname, args, kwds)`` requests), not
from distproc's own client, so a bug shared by distproc's client and server
cannot hide itself.  Every socket operation has a timeout: a server that hangs
fails the test with a message instead of eating the whole pytest timeout.
"""

from __future__ import annotations

import hmac
import os
import pickle
import socket
import struct
import time
from types import TracebackType
from typing import Any

from shared_fixtures import Address

__all__ = [
    "CHALLENGE",
    "FAILURE",
    "WELCOME",
    "Address",
    "PeerClosed",
    "WireClient",
    "frame",
    "open_channel",
    "reset_close",
    "round_trip",
    "server_call",
]

HEADER = struct.Struct("!i")
HEADER64 = struct.Struct("!Q")
CHALLENGE = b"#CHALLENGE#"
WELCOME = b"#WELCOME#"
FAILURE = b"#FAILURE#"
_DIGESTS = ("md5", "sha256", "sha384", "sha3_256", "sha3_384")


class PeerClosed(Exception):
    """The server closed the connection (EOF or reset)."""


def frame(payload: bytes) -> bytes:
    """``payload`` with its 4-byte signed big-endian length prefix."""
    return HEADER.pack(len(payload)) + payload


def _digest_response(authkey: bytes, message: bytes) -> bytes:
    """The answer to challenge ``message`` (without the ``#CHALLENGE#`` prefix)."""
    if message.startswith(b"{"):
        name = message[1 : message.index(b"}")].decode("ascii")
        assert name in _DIGESTS, name
        return b"{" + name.encode("ascii") + b"}" + hmac.new(authkey, message, name).digest()
    return hmac.new(authkey, message, "md5").digest()


def _check_response(authkey: bytes, message: bytes, response: bytes) -> bool:
    if response.startswith(b"{"):
        end = response.find(b"}")
        name = response[1:end].decode("ascii", "replace")
        if name not in _DIGESTS:
            return False
        mac = response[end + 1 :]
    else:
        name, mac = "md5", response
    return hmac.compare_digest(hmac.new(authkey, message, name).digest(), mac)


def reset_close(sock: socket.socket) -> None:
    """Close ``sock`` with an RST instead of a FIN (SO_LINGER with a zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class WireClient:
    """One TCP connection to a server, spoken to frame by frame."""

    def __init__(self, address: Address, *, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # ----------------------------------------------------------------- basics
    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def send_frame(self, payload: bytes) -> None:
        self.send_raw(frame(payload))

    def _recv_exact(self, size: int) -> bytes:
        self.sock.settimeout(self.timeout)
        buf = bytearray()
        while len(buf) < size:
            try:
                chunk = self.sock.recv(min(size - len(buf), 1 << 20))
            except ConnectionResetError as exc:
                raise PeerClosed(f"connection reset after {len(buf)} of {size} bytes") from exc
            if not chunk:
                raise PeerClosed(f"EOF after {len(buf)} of {size} bytes")
            buf += chunk
        return bytes(buf)

    def recv_frame(self) -> bytes:
        (size,) = HEADER.unpack(self._recv_exact(4))
        if size == -1:
            (size,) = HEADER64.unpack(self._recv_exact(8))
        assert size >= 0, f"the server sent a negative length prefix {size}"
        return self._recv_exact(size)

    def wait_closed(self, timeout: float) -> bytes:
        """Read until the server closes the connection; return what it sent meanwhile.

        Fails the test if the connection is still open after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        data = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"the server kept the connection open for {timeout}s "
                    f"(received {bytes(data[:80])!r})"
                )
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return bytes(data)
            except TimeoutError:
                continue
            if not chunk:
                return bytes(data)
            data += chunk

    # -------------------------------------------------------------- handshake
    def recv_challenge(self) -> bytes:
        """Read the server's challenge frame; return M (without ``#CHALLENGE#``)."""
        msg = self.recv_frame()
        assert msg.startswith(CHALLENGE), msg[:40]
        return msg[len(CHALLENGE) :]

    def answer_challenge(self, authkey: bytes) -> None:
        """Steps 1-3: answer the server's challenge and read its verdict."""
        message = self.recv_challenge()
        self.send_frame(_digest_response(authkey, message))
        verdict = self.recv_frame()
        if verdict != WELCOME:
            raise AssertionError(f"the server refused our digest: {verdict!r}")

    def deliver_challenge(self, authkey: bytes, *, then: bytes = b"", marker: bytes = b"") -> None:
        """Steps 4-6: challenge the server; ``then`` is written with the WELCOME frame.
        ``marker`` starts the random part (distproc's upgrade marker asks for its protocol)."""
        nonce = b"{sha256}" + marker + os.urandom(40 - len(marker))
        self.send_frame(CHALLENGE + nonce)
        response = self.recv_frame()
        if not _check_response(authkey, nonce, response):
            self.send_frame(FAILURE)
            raise AssertionError("the server answered our challenge wrongly")
        self.send_raw(frame(WELCOME) + then)

    def handshake(self, authkey: bytes, *, then: bytes = b"") -> None:
        self.answer_challenge(authkey)
        self.deliver_challenge(authkey, then=then)

    # --------------------------------------------------------------- requests
    @staticmethod
    def encode_request(
        ident: str | None, methodname: str, args: tuple[Any, ...] = (), kwds: Any = None
    ) -> bytes:
        return pickle.dumps((ident, methodname, args, {} if kwds is None else kwds))

    def send_request(
        self, ident: str | None, methodname: str, args: tuple[Any, ...] = (), kwds: Any = None
    ) -> None:
        self.send_frame(self.encode_request(ident, methodname, args, kwds))

    def recv_reply(self) -> tuple[str, Any]:
        reply = pickle.loads(self.recv_frame())
        assert isinstance(reply, tuple) and len(reply) == 2, reply
        return reply[0], reply[1]

    def request(
        self, ident: str | None, methodname: str, args: tuple[Any, ...] = (), kwds: Any = None
    ) -> tuple[str, Any]:
        self.send_request(ident, methodname, args, kwds)
        return self.recv_reply()

    def call(
        self, ident: str | None, methodname: str, args: tuple[Any, ...] = (), kwds: Any = None
    ) -> Any:
        """Make a request and return its result; fail the test unless it is ``#RETURN``."""
        kind, result = self.request(ident, methodname, args, kwds)
        if kind != "#RETURN":
            raise AssertionError(f"{methodname}{args!r} -> {kind}: {result}")
        return result


def open_channel(
    address: Address, authkey: bytes, *, name: str = "fault-test", timeout: float = 5.0
) -> WireClient:
    """An authenticated object-call channel (``accept_connection`` done)."""
    ch = WireClient(address, timeout=timeout)
    try:
        ch.handshake(authkey)
        ch.call(None, "accept_connection", (name,))
    except BaseException:
        ch.close()
        raise
    return ch


def server_call(
    address: Address,
    authkey: bytes,
    methodname: str,
    args: tuple[Any, ...] = (),
    *,
    timeout: float = 5.0,
) -> Any:
    """One one-shot server method call (``create``, ``decref``...) on a new connection."""
    with WireClient(address, timeout=timeout) as c:
        c.handshake(authkey)
        return c.call(None, methodname, args)


def round_trip(address: Address, authkey: bytes, *, deadline: float = 2.0) -> float:
    """A good client's full round trip: create a queue, put, get, decref.

    Four connections, each with the full handshake.  Fails the test unless it
    completes within ``deadline`` seconds; returns the time it took.
    """
    start = time.monotonic()
    token = os.urandom(8).hex()
    ident, _exposed = server_call(address, authkey, "create", ("Queue",), timeout=deadline)
    with open_channel(address, authkey, name="probe", timeout=deadline) as ch:
        ch.call(ident, "put", (token,))
        got = ch.call(ident, "get", ())
        assert ch.call(ident, "qsize", ()) == 0
    server_call(address, authkey, "decref", (ident,), timeout=deadline)
    elapsed = time.monotonic() - start
    assert got == token
    assert elapsed < deadline, f"a good client's round trip took {elapsed:.2f}s"
    return elapsed
