"""What a map run needs of its :class:`~distproc.Executor`: a narrow interface.

:mod:`.mapping` and :mod:`.blockmap` take their Executor as a
:class:`Submitter`, so they need not import :mod:`.executor` (which imports
them): the circle is broken here, and what a run may do with its Executor is
written down in one place.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["Submitter"]


class Submitter(Protocol):
    """The part of :class:`~distproc.Executor` that ``map`` and ``map_lines`` use."""

    #: The payload codec (``NATIVE`` or ``PICKLE``) and the options of every task.
    _codec: bytes
    _opts: dict[str, Any]
    #: The largest payload that reaches a worker in one frame.
    max_task_bytes: int

    def _enqueue(
        self, ref: str, payload: bytes, opts: Any, *, wait: bool = True
    ) -> concurrent.futures.Future[Any]: ...

    def _payload(self, ref: str, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        ...

    def _check_size(self, size: int) -> None: ...

    def _count_workers(self) -> int | None: ...

    def cancel_futures(self, futures: Iterable[concurrent.futures.Future[Any]]) -> int: ...
