"""distproc: distributed processes, made production-grade.

``distproc.managers`` is a drop-in for ``multiprocessing.managers`` that speaks
the same wire protocol; ``distproc.Manager()`` stands in for
``multiprocessing.Manager()``.
"""

from ._version import __version__
from .errors import (
    AuthenticationError,
    ConnectionLostError,
    DistprocError,
    FrameTooLargeError,
    ProtocolError,
    RemoteError,
    StartError,
)
from .managers import BaseManager, BaseProxy, Manager, SharedMemoryManager, SyncManager, Token
from .server import ServerConfig

__all__ = [
    "AuthenticationError",
    "BaseManager",
    "BaseProxy",
    "ConnectionLostError",
    "DistprocError",
    "FrameTooLargeError",
    "Manager",
    "ProtocolError",
    "RemoteError",
    "ServerConfig",
    "SharedMemoryManager",
    "StartError",
    "SyncManager",
    "Token",
    "__version__",
]
