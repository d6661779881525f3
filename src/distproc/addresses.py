"""Socket addresses as people read them, for every layer (messages, status, the CLI),
and the one way a listening socket is made."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

__all__ = ["format_address", "is_loopback", "listen_on"]


def format_address(address: Any) -> str:
    """A bound address as ``HOST:PORT`` (``[HOST]:PORT`` for IPv6), or a path as is."""
    if isinstance(address, (str, bytes)):
        return os.fsdecode(address)
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1`` (IPv4-mapped too)."""
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def listen_on(address: Any, backlog: int) -> socket.socket:
    """A non-blocking socket bound to ``address`` (``(HOST, PORT)`` or a Unix path), listening.

    Connections that arrive before anything accepts them wait in the
    ``backlog``: a process can start its peers first and serve them later.
    """
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
