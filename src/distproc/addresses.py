"""Socket addresses as people read them, for every layer (messages, status, the CLI)."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

__all__ = ["format_address", "is_loopback"]


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
