"""A ``map`` run's progress in the status report of the service that runs it.

While an :class:`~distproc.Executor` that hosts its service and serves its
dashboard (``http=``) iterates over a ``map``, the server's ``status`` report
lists the run as a service of kind ``"map"``: the function, the results
yielded so far, the total when it is known, and how long the run has been
going.  ``distproc status`` and the
dashboard (which adds the rate and the ETA) show it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["MapStatus"]

_T = TypeVar("_T")
_ids = itertools.count(1)


class MapStatus:
    """The progress of one run; :meth:`count` yields its results and counts them."""

    def __init__(self, function: str, total: int | None) -> None:
        self.id = next(_ids)
        self.function = function
        self.total = total
        self.done = 0
        self.started = time.monotonic()

    def __distproc_status__(self) -> dict[str, Any]:
        return {
            "kind": "map",
            "id": self.id,
            "function": self.function,
            "done": self.done,
            "total": self.total,
            "running_for": time.monotonic() - self.started,
        }

    def count(
        self,
        results: Iterator[_T],
        shown: Callable[[MapStatus], None],
        gone: Callable[[MapStatus], None],
        weight: Callable[[_T], int] | None = None,
    ) -> Iterator[_T]:
        """``results``, counted; ``shown(self)`` at the first step, ``gone(self)`` at the end.

        Each result counts ``weight(result)`` calls (one without ``weight``):
        a block of lines counts its lines.
        """
        shown(self)
        try:
            for value in results:
                self.done += 1 if weight is None else weight(value)
                yield value
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
            gone(self)
