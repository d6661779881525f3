"""Where the dashboard gets its report: the same one ``distproc status --json`` prints.

* :class:`ServerSource`: a distproc server of this process, whose loop the
  HTTP side shares (``distproc serve --http``, ``distproc map --http``,
  ``Executor(http=...)``).  Its report is the server method ``status``,
  called on the loop as a client's ``status`` call is.
* :class:`PollingSource`: a blocking function that asks a server elsewhere
  (``distproc dashboard HOST:PORT``: the native protocol, as ``distproc
  status`` does), run on a thread of its own so that the loop never waits
  for the network.  One question is in flight at a time; callers that come
  meanwhile share its answer.

A source may also *requeue* a dead letter.  That is the operation of
``distproc dead-letters --requeue``: a source offers it when the service
has a ``requeue_dead_letters(task_ids) -> requeued ids`` method.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["REQUEUE_METHOD", "PollingSource", "ServerSource", "SourceError", "StatusSource"]

#: The service method that requeues dead letters: ``requeue_dead_letters(task_ids)``,
#: returning the ids it put back on the queue (the others were no dead letters).
REQUEUE_METHOD = "requeue_dead_letters"


class SourceError(Exception):
    """The report could not be had; the message says why (shown on the page)."""


class StatusSource(Protocol):
    """What the HTTP side reads."""

    #: Where the report comes from, as people read it (``HOST:PORT``).
    where: str

    async def report(self) -> dict[str, Any]:
        """The status report now; :class:`SourceError` when it cannot be had."""
        ...

    def can_requeue(self) -> bool:
        """Whether :meth:`requeue` can work."""
        ...

    async def requeue(self, task_ids: list[int]) -> list[int]:
        """Put these dead letters back on the queue; the ids that were put back."""
        ...


class _StatusServer(Protocol):
    """What :class:`ServerSource` uses of a :class:`distproc.server.Server`."""

    services: list[Any]

    def status(self, c: Any) -> dict[str, Any]: ...


class ServerSource:
    """The report of a server whose loop this runs on (see the module docstring)."""

    def __init__(self, server: _StatusServer, where: str) -> None:
        self._server = server
        self.where = where

    async def report(self) -> dict[str, Any]:
        return self._server.status(None)

    def _requeuer(self) -> Callable[[list[int]], Any] | None:
        for service in self._server.services:
            method = getattr(service, REQUEUE_METHOD, None)
            if callable(method):
                return method  # type: ignore[no-any-return]  # callable() holds
        return None

    def can_requeue(self) -> bool:
        return self._requeuer() is not None

    async def requeue(self, task_ids: list[int]) -> list[int]:
        method = self._requeuer()
        if method is None:
            raise NotImplementedError("this service cannot requeue dead letters")
        return [int(t) for t in method(task_ids)]


class PollingSource:
    """A report from ``fetch()``, a blocking call run on a thread (see the module docstring)."""

    def __init__(self, fetch: Callable[[], dict[str, Any]], where: str) -> None:
        self._fetch = fetch
        self.where = where
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="distproc-poll")
        self._asking: asyncio.Future[dict[str, Any]] | None = None

    async def report(self) -> dict[str, Any]:
        if self._asking is None or self._asking.done():
            loop = asyncio.get_running_loop()
            self._asking = asyncio.ensure_future(loop.run_in_executor(self._pool, self._fetch))
        try:
            return await asyncio.shield(self._asking)
        except SourceError:
            raise
        except Exception as exc:
            # A command's own errors (click's) carry their message in format_message().
            shown = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            raise SourceError(str(shown) or type(exc).__name__) from exc

    def can_requeue(self) -> bool:
        return False

    async def requeue(self, task_ids: list[int]) -> list[int]:
        raise NotImplementedError("a dashboard that polls a service cannot requeue yet")

    def close(self) -> None:
        """Stop the polling thread (a question in flight finishes on its own)."""
        self._pool.shutdown(wait=False)
