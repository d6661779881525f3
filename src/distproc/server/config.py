"""A server's limits and policies: :class:`ServerConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..wire.framing import DEFAULT_MAX_FRAME

if TYPE_CHECKING:
    from ..tls import TLSConfig

__all__ = ["ServerConfig"]


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
    #: Seconds a native client's references outlive its connection, so that a
    #: process that reconnects (after a network error) finds its objects again.
    reconnect_grace: float = 10.0
    #: Offer native clients on this host a Unix socket in place of loopback TCP
    #: (Linux; see :mod:`distproc.wire.same_host`).
    local_socket: bool = True
    #: Serve TLS only (see :mod:`distproc.tls`); a TLS server offers no same-host socket.
    tls: TLSConfig | None = None
