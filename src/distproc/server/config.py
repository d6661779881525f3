"""A server's limits and policies: :class:`ServerConfig`.

Every buffer, table and thread count that a peer can grow has a bound here.
The defaults are far above what a real program reaches (a stdlib client has
one request in flight, a native client one call per thread or coroutine); a
peer that reaches one is slowed (the server stops reading it) or refused with
a message naming the field, and everyone else is served as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..wire.framing import DEFAULT_MAX_FRAME

if TYPE_CHECKING:
    from ..tls import TLSConfig

__all__ = ["ServerConfig"]


@dataclass
class ServerConfig:
    """Limits and policies of a server (see the module docstring)."""

    #: Largest frame accepted after the handshake, in bytes.  A frame's buffer
    #: grows as its bytes arrive, so a length prefix alone buys no memory.
    max_frame: int = DEFAULT_MAX_FRAME
    #: Seconds a new connection has to complete the handshake.
    handshake_timeout: float = 10.0
    #: Accept HMAC-MD5 answers from legacy (CPython <= 3.11) peers.
    allow_md5: bool = True
    #: ``listen()`` backlog: connects the kernel completes before the server accepts
    #: them (capped by the system's ``net.core.somaxconn``); past it, a connect
    #: waits for the client's SYN to be sent again, a second or more.  asyncio
    #: also accepts up to this many connections at a time: keep it well under
    #: the limit of open files.
    backlog: int = 128
    #: Seconds a native client's references outlive its connection, so that a
    #: process that reconnects (after a network error) finds its objects again.
    reconnect_grace: float = 10.0
    #: Offer native clients on this host a Unix socket in place of loopback TCP
    #: (Linux; see :mod:`distproc.wire.same_host`).  Never with ``tls``: the
    #: Unix socket would bypass the client certificate.
    local_socket: bool = True
    #: Connections that have not finished the handshake, in total: a new one
    #: past this is closed at once (the descriptors stay for authenticated peers).
    max_handshaking: int = 512
    #: The same, per peer address (IP address, or the local process of a Unix socket).
    max_handshaking_per_peer: int = 128
    #: Bytes of requests a stdlib channel may send ahead of the reply to its
    #: call in flight; past them the server stops reading that connection
    #: until it catches up (a stdlib client sends one request at a time).
    max_pipelined_bytes: int = 1024 * 1024
    #: Calls in flight on one native connection (waiting in ``get()`` included);
    #: a call past this fails at once with an error that names this field.
    max_calls_per_connection: int = 65536
    #: Threads that one connection's calls may hold at once (user methods that
    #: may block run on threads); its further calls wait for one of them.
    max_threads_per_connection: int = 1024
    #: Values (container items, counted with the containers) that the
    #: arguments of one native call may decode to: a few bytes must not
    #: expand into gigabytes.  A call past it fails alone, with its error.
    max_decoded_items: int = 16 * 1024 * 1024
    #: Serve TLS only (see :mod:`distproc.tls`); a TLS server offers no same-host socket.
    tls: TLSConfig | None = None
