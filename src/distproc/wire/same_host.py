"""Same-host connections: a Unix socket in place of loopback TCP.

A round trip over a Unix socket costs the kernel less than one over loopback
TCP, for small messages and large ones alike (the README gives the figures).
So a distproc server on Linux that listens on
TCP also listens on a Unix socket in the abstract namespace, under a random
name, and offers it to native clients that reached it over loopback:

1. Both sides set ``FLAG_LOCAL`` in their upgrade marker (see
   :mod:`.handshake`) when the other side's address is a loopback one.
2. After the handshake, if both did, the server's first frame is a ``HELLO``
   record carrying the name.
3. The client connects to that name, runs the whole handshake again (the
   authkey guards the Unix socket as it guards TCP), and, if all went well,
   closes the TCP connection and goes on over the Unix one.  If not (the name
   does not exist on this host: loopback was a tunnel, such as ``ssh -L``), it
   stays on TCP.

Loopback and abstract Unix names both belong to the network namespace, so a
loopback peer can reach the name unless a tunnel is in between, and a
tunnelled peer finds nothing there: 128 random bits name the socket.  Stdlib
peers never see any of this.  ``DISTPROC_LOCAL_SOCKET=0`` in the environment
turns it off on the side that has it (``ServerConfig.local_socket`` too).
"""

from __future__ import annotations

import os
import socket
import struct
import sys

from ..addresses import is_loopback
from ..errors import ProtocolError
from .codecs import BytesLike
from .handshake import FLAG_PICKLE
from .records import HELLO, iter_records, record

__all__ = [
    "ENV",
    "NAME_MAX",
    "TIMEOUT",
    "check_same_server",
    "client_asks",
    "enabled",
    "name_frame",
    "new_name",
    "parse_name_frame",
    "peer_on_loopback",
    "peer_pid",
]

ENV = "DISTPROC_LOCAL_SOCKET"
#: The largest frame that may carry the name.
NAME_MAX = 4096
#: Seconds that moving to the Unix socket may take before the client stays on TCP.
TIMEOUT = 10.0
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def enabled() -> bool:
    """Whether this process may use same-host sockets: Linux, and not turned off."""
    return sys.platform.startswith("linux") and os.environ.get(ENV, "1").strip() != "0"


def client_asks(sock: socket.socket | None) -> bool:
    """Whether a client connected by ``sock`` asks to move (step 1 above)."""
    return sock is not None and enabled() and peer_on_loopback(sock)


def check_same_server(there: int | None, here: int) -> None:
    """Refuse the Unix socket unless its server's upgrade flags (``there``)
    say what the TCP one's did (``here``): a distproc peer, pickle alike."""
    if there is None or (there ^ here) & FLAG_PICKLE:
        raise ProtocolError("the same-host socket is not served like the TCP one")


def new_name() -> str:
    """A fresh name in the abstract namespace (the leading NUL puts it there)."""
    return f"\0distproc-{os.getpid()}-{os.urandom(16).hex()}"


def name_frame(name: str) -> bytes:
    """The server's frame that names its Unix socket (step 2 above)."""
    return b"".join(record(HELLO, 0, blob=name.encode()))


def parse_name_frame(frame: BytesLike) -> str:
    """The name in the server's frame; refuses anything but an abstract name."""
    records = list(iter_records(frame))
    if len(records) != 1 or records[0][0] != HELLO:
        raise ProtocolError("expected the server's same-host socket name")
    name = bytes(records[0][4]).decode("utf-8", "replace")
    if not name.startswith("\0"):  # never a path on disk
        raise ProtocolError(
            f"the server named a same-host socket outside the abstract namespace: {name!r}"
        )
    return name


def peer_on_loopback(sock: socket.socket) -> bool:
    """Whether ``sock`` is TCP and the address at its other end is a loopback one."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        return is_loopback(sock.getpeername()[0])
    except OSError:
        return False


def peer_pid(sock: socket.socket) -> int | None:
    """The process id at the other end of a Unix socket, where the kernel says."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None or sock.family != socket.AF_UNIX:
        return None
    try:
        pid, _, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _PEERCRED.size))
    except OSError:
        return None
    return pid or None
