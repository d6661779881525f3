"""distproc: distributed processes, made production-grade.

``distproc.managers`` is a drop-in for ``multiprocessing.managers`` that speaks
the same wire protocol; ``distproc.Manager()`` stands in for
``multiprocessing.Manager()``.  ``distproc.Executor`` runs tasks on workers
that may die without losing any (see :mod:`distproc.tasks`).
"""

import typing as _typing

from ._version import __version__
from .errors import (
    AuthenticationError,
    ConnectionLostError,
    DistprocError,
    FrameTooLargeError,
    NotAServerError,
    NoTaskServiceError,
    ProtocolError,
    RemoteError,
    RemoteTraceback,
    ServiceLostError,
    StartError,
    StoreError,
    TaskImportError,
    TaskTimeoutError,
    TLSError,
    WorkerLostError,
)
from .managers import BaseManager, BaseProxy, SharedMemoryManager, SyncManager, Token
from .server import ServerConfig
from .tls import TLSConfig

if _typing.TYPE_CHECKING:
    from multiprocessing.context import BaseContext as _BaseContext

if _typing.TYPE_CHECKING:
    from .tasks import Executor


def Manager(*, ctx: "_BaseContext | None" = None) -> SyncManager:
    """A started :class:`SyncManager`, as ``multiprocessing.Manager()`` returns."""
    import multiprocessing

    manager = SyncManager(ctx=ctx or multiprocessing.get_context())
    manager.start()
    return manager


def __getattr__(name: str) -> _typing.Any:
    # The task system is imported on first use: code that only uses the
    # drop-in managers does not pay for it.
    if name == "Executor":
        from .tasks import Executor

        return Executor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "Executor"})


__all__ = [
    "AuthenticationError",
    "BaseManager",
    "BaseProxy",
    "ConnectionLostError",
    "DistprocError",
    "Executor",
    "FrameTooLargeError",
    "Manager",
    "NoTaskServiceError",
    "NotAServerError",
    "ProtocolError",
    "RemoteError",
    "RemoteTraceback",
    "ServerConfig",
    "ServiceLostError",
    "SharedMemoryManager",
    "StartError",
    "StoreError",
    "SyncManager",
    "TLSConfig",
    "TLSError",
    "TaskImportError",
    "TaskTimeoutError",
    "Token",
    "WorkerLostError",
    "__version__",
]
