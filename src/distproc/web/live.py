"""The page's live feed: one report per interval, shared by every open page.

:class:`Live` asks its source for the report every ``interval`` seconds
(whether or not a page is open, so that the throughput chart has a history
when one opens), adds the derived view of :mod:`.history`, and keeps the
result as the *latest update*, encoded once however many pages watch.  Each
open page is a server-sent-events stream that sends the latest update
whenever there is a newer one: a page that reads slowly skips updates rather
than queueing them, so it holds at most one update and the socket's buffers.
A stream whose writes make no progress for ``write_timeout`` seconds is
dropped, and at most ``MAX_WATCHERS`` streams are open at once.

What the page gets never includes task payloads: keys that would carry a
task's arguments or result (:data:`PAYLOAD_KEYS`) are removed from the report
before it leaves the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from .history import History
from .sources import SourceError, StatusSource

__all__ = ["MAX_WATCHERS", "PAYLOAD_KEYS", "Live", "redact"]

log = logging.getLogger("distproc.web")

MAX_WATCHERS = 64
#: Keys whose values are task payloads (arguments, results): never sent to a page.
PAYLOAD_KEYS = frozenset({"args", "kwargs", "arguments", "payload", "result"})


def redact(value: Any) -> Any:
    """``value`` without any :data:`PAYLOAD_KEYS` entry, at any depth."""
    if isinstance(value, Mapping):
        return {k: redact(v) for k, v in value.items() if k not in PAYLOAD_KEYS}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


class Live:
    """See the module docstring.  Create, :meth:`start` and :meth:`close` it on one loop."""

    def __init__(
        self, source: StatusSource, *, interval: float = 1.0, write_timeout: float = 10.0
    ) -> None:
        self.source = source
        self.interval = interval
        self.write_timeout = write_timeout
        self.history = History()
        self.watchers = 0
        self.closing = False
        self.version = 0
        self.report: dict[str, Any] | None = None
        self.error: str | None = None
        self._update: dict[str, Any] = {}
        self._encoded: tuple[int, bytes] = (-1, b"")
        self._changed: asyncio.Condition | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="distproc-web-live")

    async def close(self) -> None:
        """Stop asking, and end every stream."""
        self.closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    def refresh(self) -> None:
        """Ask for a new report now (after an action that changed it)."""
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while not self.closing:
            try:
                await self.tick()
            except Exception:  # a bug must not end the feed
                log.exception("the dashboard could not make an update")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    async def tick(self) -> None:
        """Read the report once and publish the update."""
        try:
            report: dict[str, Any] | None = await self.source.report()
            error = None
        except SourceError as exc:
            report, error = None, str(exc)
        self.report, self.error = report, error
        views = self.history.update(report, time.monotonic()) if report is not None else []
        self._update = {
            "at": time.time(),
            "source": self.source.where,
            "error": error,
            "requeue": self.source.can_requeue(),
            "report": None if report is None else redact(report),
            "views": views,
        }
        self.version += 1
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    def encoded(self) -> bytes:
        """The latest update as JSON, encoded once per version."""
        if self._encoded[0] != self.version:
            self._encoded = (self.version, json.dumps(self._update, default=str).encode())
        return self._encoded[1]

    async def newer_than(self, seen: int) -> int:
        """Wait for an update newer than version ``seen``; its version (or -1: closing)."""
        assert self._changed is not None
        async with self._changed:
            await self._changed.wait_for(lambda: self.version > seen or self.closing)
        return -1 if self.closing else self.version
