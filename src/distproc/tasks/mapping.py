"""``Executor.map``: calls fed lazily, batched adaptively, results in order.

A feeder thread makes chunks of the input and submits them; the caller's
iterator yields results in input order as they arrive.  An input of unknown
length (a generator, stdin) is read ahead on a thread of its own (at most
``READ_AHEAD`` calls), and a chunk takes the calls that have arrived, up to
its size, without waiting for more: an input that comes slowly (a terminal,
``tail -f``) has its calls run as they come.  An input whose length is known
is at hand, and is read directly.  ``submit()``'s backpressure bounds what
is in flight, so an endless input is fine.

With ``chunksize=None`` (the default) calls travel in *chunks* sized from
the time the workers report: about ``CHUNK_SECONDS`` of work each, at most
``MAX_CHUNK`` calls, and small enough near the end of a known-length input
that every worker gets a share.  The first chunks hold one call each, until
a time is known.  Each call in a chunk has its own outcome: one call that
raises fails only itself.

A chunk runs on one worker, so a worker lost while it runs one takes the
whole chunk: the chunk is then split and its calls are submitted one by one,
each counting that loss as its first strike.  This happens as soon as the
loss is known, not when the caller's iterator reaches the chunk, and the
calls go to the front of the service's queue: they run before the rest of
the input, as a lost task's lease does.  The call that brought the worker
down is then dead-lettered after ``max_attempts`` losses in all, as a
submitted task would be, and the others run normally.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import FrameTooLargeError, WorkerLostError
from .payloads import encode, rebuild_error
from .records import OK

if TYPE_CHECKING:
    from .progress import ProgressBar
    from .submitter import Submitter

__all__ = ["CHUNK_SECONDS", "MAX_CHUNK", "MapRun"]

CHUNK_SECONDS = 0.02
MAX_CHUNK = 1024
READ_AHEAD = 2 * MAX_CHUNK
#: Calls in flight at most: submitted and not yet yielded to the caller.
IN_FLIGHT = 64 * MAX_CHUNK
_END = object()
#: A chunk lost once goes back to its master, which splits it (not a dead letter);
#: ``chunk`` tells the worker that the payload is a list of calls.
_CHUNK_OPTS = {"max_attempts": 1, "split": True, "chunk": True}
_Future = concurrent.futures.Future


class _Direct:
    """The input's items, read on the feeder's thread (an input that is at hand)."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        self._it = iter(iterable)

    def take(self, most: int) -> list[Any]:
        return list(itertools.islice(self._it, most))

    def close(self) -> None:
        """Nothing runs on its own."""


class _ReadAhead:
    """The input's items, read on a thread of its own; :meth:`take` gets what has arrived."""

    def __init__(self, iterable: Iterable[Any], limit: int = READ_AHEAD) -> None:
        self._items: deque[Any] = deque()
        self._limit = limit
        self._cond = threading.Condition(threading.Lock())
        self._taker_waits = self._reader_waits = False
        self._ended = self._closed = False
        self._error: BaseException | None = None
        thread = threading.Thread(target=self._read, args=(iterable,), name="distproc-map-read",
                                  daemon=True)  # fmt: skip
        thread.start()

    def _read(self, iterable: Iterable[Any]) -> None:
        items, cond = self._items, self._cond
        try:
            for item in iterable:
                items.append(item)
                if self._taker_waits:
                    with cond:
                        cond.notify()
                if len(items) >= self._limit:
                    with cond:
                        self._reader_waits = True
                        while len(items) >= self._limit and not self._closed:
                            cond.wait()
                        self._reader_waits = False
                if self._closed:
                    return
        except BaseException as exc:
            self._error = exc
        with cond:
            self._ended = True
            cond.notify()

    def take(self, most: int) -> list[Any]:
        """1 to ``most`` items, waiting for the first; ``[]`` at the end (or once closed)."""
        items, cond = self._items, self._cond
        if not items:
            with cond:
                self._taker_waits = True
                while not items and not self._ended and not self._closed:
                    cond.wait()
                self._taker_waits = False
        out: list[Any] = []
        while items and len(out) < most:
            out.append(items.popleft())
        if self._reader_waits:
            with cond:
                cond.notify()
        if not out and self._error is not None:
            raise self._error
        return out

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class _Raise:
    """A call's exception, to be raised where its value would be yielded."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Chunk:
    """A chunk of calls in flight, and its calls as tasks of their own once it is split."""

    __slots__ = ("calls", "future", "lock", "split")

    def __init__(self, calls: list[Any], future: _Future[Any]) -> None:
        self.calls = calls
        self.future = future
        self.lock = threading.Lock()
        self.split: list[_Future[Any]] | None = None


class MapRun:
    """One ``map``/``starmap`` call: see the module docstring."""

    def __init__(
        self,
        executor: Submitter,
        fn: Callable[..., Any],
        ref: str,
        iterable: Iterable[Iterable[Any]],
        *,
        timeout: float | None,
        chunksize: int | None,
        bar: ProgressBar | None,
        total: int | None,
        return_exceptions: bool,
    ) -> None:
        self.ex = executor
        self.fn = fn
        self.ref = ref
        self.iterable = iterable
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.chunksize = chunksize
        self.bar = bar
        self.total = total
        self.return_exceptions = return_exceptions
        self.pending: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.stop = threading.Event()
        self.per_call: float | None = None  # seconds per call, smoothed
        self.timed = threading.Event()
        self.in_flight = 0  # chunks submitted before any time was known
        self.fed = 0
        self.window = threading.Condition(threading.Lock())
        self.unyielded = 0  # calls submitted and not yet yielded
        self.input: _ReadAhead | _Direct | None = None
        self.feeder = threading.Thread(target=self._feed, name="distproc-map-feed", daemon=True)

    # -------------------------------------------------------------- feeding
    def _size(self) -> int:
        if self.chunksize is not None:
            return self.chunksize
        per_call = self.per_call
        if per_call is None:
            return 1
        size = int(CHUNK_SECONDS / max(per_call, 1e-7))
        if self.total is not None:
            workers = self.ex._count_workers() or 4
            size = min(size, -(-(self.total - self.fed) // (4 * workers)))
        return max(1, min(MAX_CHUNK, size))

    def _wait_for_timing(self) -> None:
        """Before any chunk time is known, keep a few one-call chunks in flight only."""
        if self.chunksize is not None or self.timed.is_set():
            return
        limit = 2 * (self.ex._count_workers() or 2)
        while self.in_flight >= limit and not self.stop.is_set():
            if self.timed.wait(0.05):
                return

    def _feed(self) -> None:
        ex = self.ex
        try:
            while not self.stop.is_set():
                self._wait_for_timing()
                # Only this thread raises the count: below the limit unlocked is below it.
                if self.unyielded >= IN_FLIGHT:
                    with self.window:
                        while self.unyielded >= IN_FLIGHT and not self.stop.is_set():
                            self.window.wait()
                assert self.input is not None
                chunk = [list(args) for args in self.input.take(self._size())]
                if not chunk or self.stop.is_set():
                    break
                self.fed += len(chunk)
                with self.window:
                    self.unyielded += len(chunk)
                if self.chunksize == 1 or not self.ref:
                    self.pending.put(self._submit_call(chunk[0]))
                    continue
                for part, payload in self._fitting(chunk):
                    if payload is None:  # one call, too large to send: it fails alone
                        self.pending.put(self._submit_call(part[0]))
                        continue
                    # max_attempts=1: a chunk lost once is split (see the module docstring).
                    future = ex._enqueue(self.ref, payload, {**ex._opts, **_CHUNK_OPTS})
                    entry = _Chunk(part, future)
                    if not self.timed.is_set():
                        self.in_flight += 1
                    self.pending.put(entry)
                    future.add_done_callback(functools.partial(self._on_done, entry))
        except BaseException as exc:
            self.pending.put(exc)
        self.pending.put(_END)

    def _submit_call(self, args: list[Any]) -> _Future[Any]:
        """One call as a task of its own; one too large to send fails alone, here."""
        ex = self.ex
        try:
            payload = ex._payload(self.ref, self.fn, tuple(args), {})
        except FrameTooLargeError as exc:
            failed: _Future[Any] = _Future()
            failed.set_exception(exc)
            return failed
        return ex._enqueue(self.ref, payload, ex._opts or None)

    def _fitting(self, chunk: list[Any]) -> list[tuple[list[Any], bytes | None]]:
        """``chunk`` and its payload, cut in halves until each part fits in a task.

        A part of one call that does not fit has no payload (``None``).
        """
        payload = encode(((chunk,), {}), self.ex._codec)
        if len(payload) <= self.ex.max_task_bytes:
            return [(chunk, payload)]
        if len(chunk) == 1:
            return [(chunk, None)]
        half = len(chunk) // 2
        return self._fitting(chunk[:half]) + self._fitting(chunk[half:])

    # ------------------------------------------------------------ results
    def _result(self, future: _Future[Any]) -> Any:
        left = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        return future.result(left)

    def _outcome(self, future: _Future[Any]) -> Any:
        """A single call's value, or its exception when ``return_exceptions``."""
        try:
            return self._result(future)
        except concurrent.futures.TimeoutError:
            if not future.done() or not self.return_exceptions:
                raise
            return future.exception()
        except Exception as exc:
            if not self.return_exceptions:
                raise
            return exc

    def _on_done(self, entry: _Chunk, _: _Future[Any]) -> None:
        """A chunk finished (on whichever thread delivered its result): split it if it was lost."""
        future = entry.future
        if self.stop.is_set() or future.cancelled():
            return
        if isinstance(future.exception(), WorkerLostError):
            self._split(entry)

    def _split(self, entry: _Chunk) -> list[_Future[Any]]:
        """The calls of a lost chunk, submitted once each, at the front of the queue."""
        with entry.lock:
            if entry.split is not None:
                return entry.split
            lost = entry.future.exception()
            assert isinstance(lost, WorkerLostError)
            ex = self.ex
            history = [list(a) for a in lost.attempts]
            opts = {**ex._opts, "strikes": 1, "history": history, "front": True}
            futures: list[_Future[Any]] = []
            for args in entry.calls:
                payload = ex._payload(self.ref, self.fn, tuple(args), {})
                try:
                    # Not waiting for max_pending: this may run on the thread that
                    # delivers results, and the chunk's calls were counted as one.
                    futures.append(ex._enqueue(self.ref, payload, opts, wait=False))
                except RuntimeError:  # shut down meanwhile: the calls stay lost
                    failed: _Future[Any] = _Future()
                    failed.set_exception(lost)
                    futures.append(failed)
            entry.split = futures
            return futures

    def _values(self, item: _Chunk | _Future[Any]) -> list[Any]:
        """The outcomes of a chunk (or of one call), last first, for ``pop()``.

        A call that raised is a :class:`_Raise` unless ``return_exceptions``.
        The list is the only thing that holds the values: the caller pops
        each one as it yields it, so a value it has yielded is not kept
        (as :meth:`concurrent.futures.Executor.map` does not keep it).
        """
        if not isinstance(item, _Chunk):
            return [self._outcome(item)]
        try:
            seconds, outcomes = self._result(item.future)
        except WorkerLostError:
            futures = self._split(item)
            item.split = []  # the values are in the futures: only the list below holds them
            values = [self._outcome(future) for future in futures]
            values.reverse()
            return values
        except concurrent.futures.TimeoutError:
            raise
        except Exception as exc:  # the chunk as a whole failed (it could not be decoded...)
            if not self.return_exceptions:
                raise
            return [exc] * len(item.calls)
        per_call = seconds / max(1, len(item.calls))
        self.per_call = per_call if self.per_call is None else self.per_call * 0.7 + per_call * 0.3
        self.timed.set()
        outcomes.reverse()  # the future's own list: emptied as the values are yielded
        for index, (status, value) in enumerate(outcomes):
            if status != OK:
                error = rebuild_error(value)
                outcomes[index] = error if self.return_exceptions else _Raise(error)
            else:
                outcomes[index] = value
        return outcomes  # type: ignore[no-any-return]  # now the values themselves

    def __iter__(self) -> Iterator[Any]:
        self.input = _Direct(self.iterable) if self.total is not None else _ReadAhead(self.iterable)
        self.feeder.start()
        bar = self.bar
        try:
            while True:
                item = self.pending.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                values = self._values(item)
                del item
                with self.window:
                    full = self.unyielded >= IN_FLIGHT
                    self.unyielded -= len(values)
                    if full:  # the feeder may be waiting
                        self.window.notify()
                while values:
                    if isinstance(values[-1], _Raise):
                        raise values.pop().error
                    if bar is not None:
                        bar.advance()  # before the caller writes it: the bar is never behind
                    yield values.pop()
        finally:
            self._close()

    def _close(self) -> None:
        self.stop.set()
        left = []
        if self.input is not None:
            self.input.close()  # the reader may wait for input for ever: it is left to itself
        while True:  # cancel what is left; let the feeder finish
            try:
                item = self.pending.get_nowait()
            except queue.Empty:
                if not self.feeder.is_alive():
                    break
                self.feeder.join(0.05)
                continue
            if isinstance(item, _Chunk):
                left.append(item.future)
                left.extend(item.split or ())
            elif isinstance(item, _Future):
                left.append(item)
        if left:
            self.ex.cancel_futures(left)
        if self.bar is not None:
            self.bar.close()
