"""The names and addresses by which other machines may reach this one.

A server bound to a wildcard address (``0.0.0.0``, ``::``) listens on every
interface, but ``0.0.0.0`` is no address to connect to: hints such as
``distproc worker HOST:PORT`` give the host's name and its interfaces'
addresses instead.  On Linux the IPv4 addresses come from each interface
(``SIOCGIFADDR``) and the IPv6 ones from ``/proc/net/if_inet6``; elsewhere
from what the host's name resolves to.  Loopback and link-local addresses are
left out: no other machine can use them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import sys
from pathlib import Path

__all__ = ["WILDCARDS", "host_addresses"]

WILDCARDS = frozenset(("", "0.0.0.0", "::"))
_SIOCGIFADDR = 0x8915


def _usable(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)


def _ipv4_of_interfaces() -> list[str]:
    import fcntl

    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # for the ioctl; sends nothing
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):  # an interface with no IPv4 address
                reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
                found.append(socket.inet_ntoa(reply[20:24]))
    return found


def _ipv6_of_interfaces() -> list[str]:
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.append(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    return found


def host_addresses(family: socket.AddressFamily = socket.AF_INET) -> list[str]:
    """This host's addresses of ``family`` that other machines can use, then its name."""
    name = socket.gethostname()
    names = [name] if name and name != "localhost" else []
    addresses: list[str] = []
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            addresses = _ipv4_of_interfaces() if family == socket.AF_INET else []
        if family == socket.AF_INET6:
            addresses = _ipv6_of_interfaces()
    if not addresses and name:
        with contextlib.suppress(OSError):
            addresses = [str(info[4][0]) for info in socket.getaddrinfo(name, None, family)]
    usable = [a for a in dict.fromkeys(addresses) if _usable(a)]
    return usable + names
