"""``Executor.map``: calls fed lazily, batched adaptively, results in order.

A feeder thread reads the input and submits; the caller's iterator yields
results in input order as they arrive.  ``submit()``'s backpressure bounds
what is in flight, so an endless input is fine.

With ``chunksize=None`` (the default) calls travel in *chunks* sized from
the time the workers report: about ``CHUNK_SECONDS`` of work each, at most
``MAX_CHUNK`` calls, and small enough near the end of a known-length input
that every worker gets a share.  The first chunks hold one call each, until
a time is known.  Each call in a chunk has its own outcome: one call that
raises fails only itself.

A chunk runs on one worker, so a worker lost while it runs one takes the
whole chunk: the chunk is then split and its calls are submitted one by one,
each counting that loss as its first strike.  The call that brought the
worker down is then dead-lettered after ``max_attempts`` losses in all, as a
submitted task would be, and the others run normally.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import WorkerLostError
from .payloads import encode, rebuild_error
from .service import OK

if TYPE_CHECKING:
    from .executor import Executor
    from .progress import ProgressBar

__all__ = ["CHUNK_SECONDS", "MAX_CHUNK", "MapRun"]

CHUNK_SECONDS = 0.02
MAX_CHUNK = 1024
CHUNK_REF = "distproc.tasks.worker:run_chunk"
_END = object()
#: A chunk lost once goes back to its master, which splits it (not a dead letter).
_CHUNK_OPTS = {"max_attempts": 1, "split": True}
_Future = concurrent.futures.Future


class MapRun:
    """One ``map``/``starmap`` call: see the module docstring."""

    def __init__(
        self,
        executor: Executor,
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
            it = iter(self.iterable)
            while not self.stop.is_set():
                self._wait_for_timing()
                size = self._size()
                chunk = [list(args) for args in itertools.islice(it, size)]
                if not chunk:
                    break
                self.fed += len(chunk)
                if self.chunksize == 1 or not self.ref:
                    args = tuple(chunk[0])
                    payload = ex._payload(self.ref, self.fn, args, {})
                    self.pending.put((None, ex._enqueue(self.ref, payload, ex._opts or None)))
                    continue
                payload = encode(((self.ref, chunk), {}), ex._codec)
                # max_attempts=1: a chunk lost once is split (see the module docstring).
                future = ex._enqueue(CHUNK_REF, payload, {**ex._opts, **_CHUNK_OPTS})
                if not self.timed.is_set():
                    self.in_flight += 1
                self.pending.put((chunk, future))
        except BaseException as exc:
            self.pending.put(exc)
        self.pending.put(_END)

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

    def _chunk(self, chunk: list[Any], future: _Future[Any]) -> Iterator[Any]:
        try:
            seconds, outcomes = self._result(future)
        except WorkerLostError as lost:
            yield from self._split(chunk, lost)
            return
        except concurrent.futures.TimeoutError:
            raise
        except Exception as exc:  # the chunk as a whole failed (it could not be decoded...)
            if not self.return_exceptions:
                raise
            for _ in chunk:
                yield exc
            return
        per_call = seconds / max(1, len(chunk))
        self.per_call = per_call if self.per_call is None else self.per_call * 0.7 + per_call * 0.3
        self.timed.set()
        for status, value in outcomes:
            if status == OK:
                yield value
                continue
            error = rebuild_error(value)
            if not self.return_exceptions:
                raise error
            yield error

    def _split(self, chunk: list[Any], lost: WorkerLostError) -> Iterator[Any]:
        ex = self.ex
        opts = {**ex._opts, "strikes": 1, "history": [list(a) for a in lost.attempts]}
        futures = [
            ex._enqueue(self.ref, ex._payload(self.ref, self.fn, tuple(args), {}), opts)
            for args in chunk
        ]
        for future in futures:
            yield self._outcome(future)

    def __iter__(self) -> Iterator[Any]:
        self.feeder.start()
        bar = self.bar
        try:
            while True:
                item = self.pending.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                chunk, future = item
                if chunk is None:
                    yield self._outcome(future)
                    if bar is not None:
                        bar.advance()
                    continue
                for value in self._chunk(chunk, future):
                    yield value
                    if bar is not None:
                        bar.advance()
        finally:
            self._close()

    def _close(self) -> None:
        self.stop.set()
        left = []
        while True:  # cancel what is left; let the feeder finish
            try:
                item = self.pending.get_nowait()
            except queue.Empty:
                if not self.feeder.is_alive():
                    break
                self.feeder.join(0.05)
                continue
            if isinstance(item, tuple):
                left.append(item[1])
        if left:
            self.ex.cancel_futures(left)
        if self.bar is not None:
            self.bar.close()
