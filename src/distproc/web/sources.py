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

Either reads the report through one function: the server's ``status`` on
its loop, or the blocking ``fetch()`` given to :class:`PollingSource`.  A
source of another kind (a Redis status reader) is a ``fetch`` of its own.

A source may also *requeue* a dead letter, by the operation of ``distproc
dead-letters --requeue``: the task service's loop method ``requeue(call,
task_ids)`` (:data:`REQUEUE_METHOD`), answered with the ids it put back once
they are stored; a polling source, by the ``requeue`` function it is given.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["REQUEUE_METHOD", "PollingSource", "ServerSource", "SourceError", "StatusSource"]

#: The task service's loop method that requeues dead letters, as ``distproc dead-letters
#: --requeue`` calls it: ``requeue(call, task_ids)``, answered with the ids put back.
REQUEUE_METHOD = "requeue"


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

    def _requeuer(self) -> Callable[[Any, list[int]], None] | None:
        for service in self._server.services:
            if REQUEUE_METHOD in getattr(service, "__distproc_loop_methods__", ()):
                return getattr(service, REQUEUE_METHOD)  # type: ignore[no-any-return]  # a loop method, found by name
        return None

    def can_requeue(self) -> bool:
        return self._requeuer() is not None

    async def requeue(self, task_ids: list[int]) -> list[int]:
        method = self._requeuer()
        if method is None:
            raise NotImplementedError("this service cannot requeue dead letters")
        call = _Call(asyncio.get_running_loop())
        method(call, task_ids)
        return [int(t) for t in await call.answer]


class _Call:
    """A loop method's call made by the dashboard itself: its answer is a future.

    It has no connection: the task service uses that only for the calls of
    masters and workers, which this is not.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.answer: asyncio.Future[Any] = loop.create_future()

    @property
    def connection(self) -> Any:
        raise AttributeError("the dashboard's own call has no connection")

    def reply(self, value: Any) -> None:
        if not self.answer.done():
            self.answer.set_result(value)

    def fail(self, exc: BaseException) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Never cancelled: the dashboard waits for the answer."""


class PollingSource:
    """A report from ``fetch()``, a blocking call run on a thread (see the module docstring)."""

    def __init__(
        self,
        fetch: Callable[[], dict[str, Any]],
        where: str,
        requeue: Callable[[list[int]], list[int]] | None = None,
    ) -> None:
        self._fetch = fetch
        self._requeue = requeue
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
            raise SourceError(_message(exc)) from exc

    def can_requeue(self) -> bool:
        return self._requeue is not None

    async def requeue(self, task_ids: list[int]) -> list[int]:
        if self._requeue is None:
            raise NotImplementedError("this dashboard was given no way to requeue")
        loop = asyncio.get_running_loop()
        # Its own thread: a requeue does not wait behind a report, nor a report behind it.
        return await loop.run_in_executor(None, self._requeue, task_ids)

    def close(self) -> None:
        """Stop the polling thread (a question in flight finishes on its own)."""
        self._pool.shutdown(wait=False)


def _message(exc: Exception) -> str:
    # A command's own errors (click's) carry their message in format_message().
    shown = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    return str(shown) or type(exc).__name__
