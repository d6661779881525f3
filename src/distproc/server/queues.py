"""Blocking ``get``/``put`` on ``queue.Queue`` objects, served by the event loop.

A client blocked in ``get()`` costs the server a small waiter record, not a
thread.  The waiter is woken when an item arrives by any route: another client,
a thread of the server's process that uses the queue directly, or a user method
running on a pool thread.  That works because ``queue.Queue`` signals every
new item through ``self.not_empty.notify()`` (and every freed slot through
``not_full``): a :class:`LoopQueue`, made on the queue's first call, replaces
those two conditions with subclasses that also tell the loop.  Threads
already waiting on the old conditions are notified too.

Items are taken from the queue only when a live waiter is at the head of the
line, so when a client dies while it waits, its waiter is dropped and the next
item goes to a live consumer (the stdlib's server thread would take it and
lose it writing to a dead socket).  Waiters are served in arrival order.  A
cancelled waiter is marked and left where it is until it reaches the head (or
until most of its line is cancelled), so a connection that drops with many
calls parked costs one step per call, not one search of the line each.

Only queues whose class keeps ``queue.Queue``'s own ``get`` and ``put`` are
served this way (``LifoQueue`` and ``PriorityQueue`` qualify); a subclass that
overrides them runs its methods on a pool thread like any user method.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from typing import Any

from .loop_service import LoopCall

__all__ = ["BATCH_METHODS", "LOOP_METHODS", "LoopQueue", "is_loop_servable"]

#: Batch methods that loop-served queues gain (exposed to proxies made automatically).
BATCH_METHODS = ("put_many", "get_many")
#: Queue methods that the loop serves itself.
LOOP_METHODS = frozenset(("get", "put", *BATCH_METHODS))


def is_loop_servable(obj: object) -> bool:
    cls: Any = type(obj)
    return (
        isinstance(obj, queue.Queue)
        and cls.get is queue.Queue.get
        and cls.put is queue.Queue.put
        and isinstance(getattr(obj, "not_empty", None), threading.Condition)
    )


class _Signalling(threading.Condition):
    """A condition that also calls ``hook`` (under the queue's mutex) on notify."""

    def __init__(self, lock: Any, old: threading.Condition, hook: Any) -> None:
        super().__init__(lock)
        self._old = old
        self._hook = hook

    def notify(self, n: int = 1) -> None:
        super().notify(n)
        self._old.notify(n)
        self._hook()

    def notify_all(self) -> None:
        super().notify_all()
        self._old.notify_all()
        self._hook()


def _notify(cond: threading.Condition) -> None:
    """``cond.notify()``, with the queue's mutex held, skipping conditions nobody waits on."""
    if type(cond) is not _Signalling:
        cond.notify()
        return
    if cond._waiters:  # type: ignore[attr-defined]  # threads of this process in q.get()
        threading.Condition.notify(cond)
    old = cond._old
    if old._waiters:  # type: ignore[attr-defined]  # ... that began before the queue was served
        old.notify()
    cond._hook()


class _Waiter:
    __slots__ = ("call", "gone", "item", "many", "timer")

    def __init__(self, call: LoopCall, item: Any = None, many: int = 0) -> None:
        self.call = call
        self.item = item  # put: the item, or for put_many the items not yet in
        self.many = many  # get_many: at most this many items; put_many: 1
        self.timer: asyncio.TimerHandle | None = None
        #: Served, expired or cancelled: no longer in line (see :class:`_Line`).
        self.gone = False


class _Line(deque[_Waiter]):
    """Waiters in arrival order; one that leaves out of turn is marked ``gone`` and
    dropped when it reaches the head, or when most of the line has left."""

    def __init__(self) -> None:
        super().__init__()
        self.dead = 0

    def __len__(self) -> int:
        """The waiters still in line."""
        return super().__len__() - self.dead

    def head(self) -> _Waiter | None:
        """The first waiter still in line, or ``None``."""
        while super().__len__():
            waiter = self[0]
            if not waiter.gone:
                return waiter
            super().popleft()
            self.dead -= 1
        return None

    def take(self) -> _Waiter:
        """Remove the first waiter still in line (there is one: see :meth:`head`)."""
        self.head()
        waiter = super().popleft()
        waiter.gone = True
        return waiter

    def leave(self, waiter: _Waiter) -> bool:
        """Take ``waiter`` out of line; ``False`` if it had left already."""
        if waiter.gone:
            return False
        waiter.gone = True
        self.dead += 1
        if self.dead > 32 and 2 * self.dead > super().__len__():
            alive = [w for w in self if not w.gone]
            self.clear()
            self.dead = 0
            self.extend(alive)
        return True


def _get_args(block: bool = True, timeout: float | None = None) -> tuple[bool, float | None]:
    return block, timeout


def _get_many_args(max_items: int, timeout: float | None = None) -> tuple[int, float | None]:
    if not isinstance(max_items, int) or max_items < 1:
        raise ValueError("max_items must be a positive int")
    return max_items, timeout


def _put_args(
    item: Any, block: bool = True, timeout: float | None = None
) -> tuple[Any, bool, float | None]:
    return item, block, timeout


class LoopQueue:
    """The loop's side of one ``queue.Queue``: its blocked getters and putters."""

    def __init__(self, q: queue.Queue[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.q = q
        self.loop = loop
        self._loop_thread = threading.get_ident()
        self.getters = _Line()
        self.putters = _Line()
        self._get_wake = False
        self._put_wake = False
        #: True while a put on the loop thread is under way: it serves the
        #: waiting getters itself, a loop iteration sooner than the hook would.
        self._serving_here = False
        with q.mutex:
            q.not_empty = _Signalling(q.mutex, q.not_empty, self._item_added)
            q.not_full = _Signalling(q.mutex, q.not_full, self._slot_freed)

    # -- wake-ups, called from any thread with the queue's mutex held --
    def _item_added(self) -> None:
        if (
            self.getters
            and not self._get_wake
            # only the loop's own put, which serves the getters right after, may skip this
            and not (self._serving_here and threading.get_ident() == self._loop_thread)
        ):
            self._get_wake = True
            self._schedule(self._serve_getters)

    def _slot_freed(self) -> None:
        if self.putters and not self._put_wake:
            self._put_wake = True
            self._schedule(self._serve_putters)

    def _schedule(self, fn: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            self.loop.call_soon(fn)
        else:
            with contextlib.suppress(RuntimeError):  # a closed loop: the server is gone
                self.loop.call_soon_threadsafe(fn)

    # -- get_nowait() and put_nowait(), on the loop, without the Python-level
    # Condition calls of queue.Queue: the loop's hottest path (same semantics).
    def _take_one(self) -> tuple[bool, Any]:
        q = self.q
        with q.mutex:
            if not q._qsize():
                return False, None
            item = q._get()
            _notify(q.not_full)
        return True, item

    def _put_one(self, item: Any) -> bool:
        q = self.q
        with q.mutex:
            if 0 < q.maxsize <= q._qsize():
                return False
            q._put(item)
            q.unfinished_tasks += 1
            _notify(q.not_empty)
        return True

    # -- on the loop --
    def get_now(self) -> tuple[bool, Any]:
        """``(True, item)`` if a ``get()`` arriving now is served at once, else
        ``(False, None)`` and nothing was taken (it would wait, or others wait first)."""
        if self.getters:
            return False, None
        return self._take_one()

    def put_now(self, item: Any) -> bool:
        """Put ``item`` if a ``put()`` arriving now is served at once; if not,
        nothing was put (it would wait).  Call :meth:`serve_getters` after replying."""
        if self.putters:
            return False
        self._serving_here = True  # the hook need not schedule: serve_getters() follows
        try:
            return self._put_one(item)
        finally:
            self._serving_here = False

    def serve_getters(self) -> None:
        """Hand items to waiting getters (after a put on the loop)."""
        if self.getters:
            self._serve_getters()

    def _serve_getters(self) -> None:
        self._get_wake = False
        getters = self.getters
        while (waiter := getters.head()) is not None:
            many = waiter.many
            if many:
                items = self._take(many)
                if not items:
                    return
                self._finish(getters.take(), items)
                continue
            found, item = self._take_one()
            if not found:
                return
            self._finish(getters.take(), item)

    def _serve_putters(self) -> None:
        self._put_wake = False
        putters = self.putters
        while (waiter := putters.head()) is not None:
            if waiter.many:
                waiter.item = self._give(waiter.item)
                if waiter.item:
                    return
            elif not self._put_one(waiter.item):
                return
            self._finish(putters.take(), None)

    def _take(self, limit: int) -> list[Any]:
        """Up to ``limit`` items, taken at once (as ``get_nowait`` would, in a batch)."""
        q = self.q
        with q.mutex:
            n = min(limit, q._qsize())
            items = [q._get() for _ in range(n)]
            if n:
                q.not_full.notify(n)
        return items

    def _give(self, items: list[Any]) -> list[Any]:
        """Put as many of ``items`` as fit; return those that did not."""
        q = self.q
        with q.mutex:
            room = len(items) if q.maxsize <= 0 else max(0, q.maxsize - q._qsize())
            n = min(room, len(items))
            for item in items[:n]:
                q._put(item)
            if n:
                q.unfinished_tasks += n
                q.not_empty.notify(n)
        return items[n:]

    @staticmethod
    def _finish(waiter: _Waiter, value: Any) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
        waiter.call.reply(value)

    def _wait(self, line: _Line, waiter: _Waiter, timeout: float | None) -> None:
        line.append(waiter)

        def cancel() -> None:
            if line.leave(waiter) and waiter.timer is not None:
                waiter.timer.cancel()

        waiter.call.on_cancel(cancel)
        if timeout is not None:
            exc = queue.Empty() if line is self.getters else queue.Full()

            def expire() -> None:
                if line.leave(waiter):
                    waiter.call.fail(exc)

            waiter.timer = self.loop.call_later(timeout, expire)

    def get(self, call: LoopCall, args: Any, kwds: Any) -> None:
        block, timeout = _get_args(*args, **kwds)
        if block and timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        found, item = self.get_now()
        if found:
            call.reply(item)
            return
        if not block:
            raise queue.Empty
        self._wait(self.getters, _Waiter(call), timeout)
        if not self.q.empty():  # an item may have come before the waiter was in line
            self._item_added()

    def put(self, call: LoopCall, args: Any, kwds: Any) -> None:
        item, block, timeout = _put_args(*args, **kwds)
        if block and timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if self.put_now(item):
            call.reply(None)
            self.serve_getters()
            return
        if not block:
            raise queue.Full
        self._wait(self.putters, _Waiter(call, item), timeout)
        if not self.q.full():
            self._slot_freed()

    def get_many(self, call: LoopCall, args: Any, kwds: Any) -> None:
        """Wait for at least one item; return a list of up to ``max_items`` of them."""
        max_items, timeout = _get_many_args(*args, **kwds)
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if not self.getters:
            items = self._take(max_items)
            if items:
                call.reply(items)
                return
            if timeout == 0:
                raise queue.Empty
        self._wait(self.getters, _Waiter(call, many=max_items), timeout)
        if not self.q.empty():
            self._item_added()

    def put_many(self, call: LoopCall, args: Any, kwds: Any) -> None:
        """Put every item, in order, waiting for room in a bounded queue."""
        (items,) = args or (kwds.pop("items"),)
        rest = list(items)
        if not self.putters:
            rest = self._give(rest)
            if not rest:
                call.reply(None)
                return
        self._wait(self.putters, _Waiter(call, rest, many=1), None)
        if not self.q.full():
            self._slot_freed()

    def close(self, exc: BaseException) -> None:
        """Fail every waiter (the server is stopping)."""
        for line in (self.getters, self.putters):
            while line:
                waiter = line.take()
                if waiter.timer is not None:
                    waiter.timer.cancel()
                waiter.call.fail(exc)
