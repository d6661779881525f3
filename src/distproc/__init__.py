"""distproc: distributed processes, made production-grade.

``distproc.managers`` is a drop-in for ``multiprocessing.managers`` that speaks
the same wire protocol; ``distproc.Manager()`` stands in for
``multiprocessing.Manager()``; ``distproc.install()`` makes the stdlib's own
names resolve to distproc (see :mod:`distproc.dropin`).  ``distproc.Executor``
runs tasks on workers that may die without losing any (see :mod:`distproc.tasks`).
"""

import typing as _typing

from ._version import __version__
from .dropin import install, uninstall
from .errors import (
    AuthenticationError,
    ConnectionLostError,
    DistprocError,
    FrameTooLargeError,
    MissingExtraError,
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
    WorkerLostError,
)

if _typing.TYPE_CHECKING:
    from multiprocessing.context import BaseContext as _BaseContext

    from .managers import BaseManager, BaseProxy, SharedMemoryManager, SyncManager, Token
    from .server import ServerConfig
    from .tasks import Executor

#: The names imported on first use, and their modules: a worker process, or
#: ``distproc map`` before it starts its workers, does not pay for the drop-in
#: managers and the server, and code that only uses those does not pay for
#: the task system.
_LAZY = {
    "BaseManager": ".managers",
    "BaseProxy": ".managers",
    "SharedMemoryManager": ".managers",
    "SyncManager": ".managers",
    "Token": ".managers",
    "ServerConfig": ".server",
    "Executor": ".tasks",
}


def Manager(*, ctx: "_BaseContext | None" = None) -> "SyncManager":
    """A started :class:`SyncManager`, as ``multiprocessing.Manager()`` returns."""
    import multiprocessing

    from .managers import SyncManager

    manager = SyncManager(ctx=ctx or multiprocessing.get_context())
    manager.start()
    return manager


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AuthenticationError",
    "BaseManager",
    "BaseProxy",
    "ConnectionLostError",
    "DistprocError",
    "Executor",
    "FrameTooLargeError",
    "Manager",
    "MissingExtraError",
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
    "TaskImportError",
    "TaskTimeoutError",
    "Token",
    "WorkerLostError",
    "__version__",
    "install",
    "uninstall",
]
