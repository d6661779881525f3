"""The reliable master/worker task system: service, Executor and worker runtime.

``Executor`` is imported on first use: a worker process, and ``distproc map``
before it starts its workers, import only the parts they need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .executor import Executor

__all__ = ["Executor"]


def __getattr__(name: str) -> Any:
    if name == "Executor":
        from .executor import Executor

        return Executor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
