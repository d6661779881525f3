"""Task-state backends: :class:`TaskBackend` and one module per kind.

``memory`` (the default: state in the service's process) and ``sqlite`` (one
file, the standard library's ``sqlite3``, durable).  :func:`open_backend`
imports a backend's module only when it is chosen, and says which extra to
install when its client library is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Capabilities, Joined, Notices, TaskBackend

__all__ = ["BACKENDS", "Capabilities", "Joined", "Notices", "TaskBackend", "open_backend"]

#: name -> (module, class, the extra that installs its client library or None).
BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "memory": (".memory", "MemoryBackend", None),
    "sqlite": (".sqlite", "SqliteBackend", None),
}


def open_backend(store: str | None = None, **options: Any) -> TaskBackend:
    """The backend for ``store``: ``None`` keeps tasks in memory, a path is a SQLite file.

    ``options`` go to the backend (``max_attempts``, ``heartbeat_timeout``, and
    ``sync`` for SQLite).
    """
    name = "memory" if store is None else "sqlite"
    module_name, class_name, extra = BACKENDS[name]
    try:
        module = importlib.import_module(module_name, __name__)
    except ImportError as exc:
        if extra is None:
            raise
        raise ImportError(
            f"the {name} task store needs {exc.name}: pip install 'distproc[{extra}]'"
        ) from exc
    cls: type[TaskBackend] = getattr(module, class_name)
    if store is not None:
        options["path"] = store
    else:
        options.pop("sync", None)
    return cls(**options)
