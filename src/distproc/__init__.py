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
    RemoteTraceback,
    StartError,
    TaskTimeoutError,
    WorkerLostError,
)
from .managers import BaseManager, BaseProxy, Manager, SharedMemoryManager, SyncManager, Token
from .server import ServerConfig
from .tasks import Executor

__all__ = [
    "AuthenticationError",
    "BaseManager",
    "BaseProxy",
    "ConnectionLostError",
    "DistprocError",
    "Executor",
    "FrameTooLargeError",
    "Manager",
    "ProtocolError",
    "RemoteError",
    "RemoteTraceback",
    "ServerConfig",
    "SharedMemoryManager",
    "StartError",
    "SyncManager",
    "TaskTimeoutError",
    "Token",
    "WorkerLostError",
    "__version__",
]
