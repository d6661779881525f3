"""Channels to a queue in Redis: masters and workers call the Redis backend themselves.

:class:`RedisMasterChannel` is an :class:`~.executor.Executor`'s (two threads,
as for a remote service: one queues batches, one reads the master's outcome
stream and confirms what it got); :class:`RedisWorkerChannel` is a worker
slot's.  Both come back after Redis restarts or fails over: a master retries
with backoff for ``reconnect_timeout`` s, and ends with
:class:`~distproc.errors.ServiceLostError` only if the server lost its data
(a server without persistence) or does not come back in time; a worker slot
sees a ``ConnectionError`` and joins again as any slot does, keeping its
leases when they were not reclaimed meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from ..errors import ServiceLostError
from .backends.redis_backend import BEATS, RedisBackend
from .channels import (
    POLL_MAX,
    POLL_WAIT,
    MasterChannel,
    MasterEnd,
    WorkerChannel,
    backoff_delays,
    send_outbox,
)
from .records import Lease, Report, WorkerHello

__all__ = ["RedisMasterChannel", "RedisWorkerChannel", "redis_down"]

log = logging.getLogger("distproc.tasks")

_T = TypeVar("_T")

#: What redis-py raises when the server is gone or not there yet.
_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def redis_down(exc: BaseException) -> bool:
    """Whether ``exc`` says the server is away (or loading its data after a restart)."""
    return isinstance(exc, _DOWN) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith("LOADING")
    )


class RedisMasterChannel(MasterChannel):
    """A master of a queue in Redis: see the module docstring."""

    def __init__(
        self,
        url: str,
        queue: str | None = None,
        *,
        max_attempts: int = 3,
        heartbeat_timeout: float = 10.0,
        reconnect_timeout: float = 300.0,
    ) -> None:
        self.backend = RedisBackend(url, queue, max_attempts=max_attempts,
                                    heartbeat_timeout=heartbeat_timeout)  # fmt: skip
        self.reconnect_timeout = reconnect_timeout
        self.mid, self.base = self.backend.add_master()
        self._where = f"{self.backend.url} (queue {self.backend.queue})"
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._lost: ServiceLostError | None = None
        self._lock = threading.Lock()
        self._end: MasterEnd | None = None
        self._threads: list[threading.Thread] = []

    def start(self, end: MasterEnd) -> None:
        self._end = end
        for target, name in ((self._send_loop, "distproc-submit"),
                             (self._receive_loop, "distproc-results")):  # fmt: skip
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` against the server, across its restarts (until reconnect_timeout)."""
        deadline: float | None = None
        delay = backoff_delays()
        while True:
            if self._lost is not None:
                raise self._lost
            try:
                result = fn(*args)
            except Exception as exc:
                if not redis_down(exc):
                    raise
                if self._closed.is_set():
                    raise ServiceLostError(
                        f"the Executor's queue at {self._where} is closed"
                    ) from exc
                now = time.monotonic()
                if deadline is None:
                    log.warning("lost Redis at %s (%s); reconnecting for up to %g s",
                                self._where, exc, self.reconnect_timeout)  # fmt: skip
                    deadline = now + self.reconnect_timeout
                if now >= deadline:
                    self._lost = ServiceLostError(
                        f"Redis at {self._where} did not come back within "
                        f"{self.reconnect_timeout:g} s (reconnect_timeout); the master's "
                        "unfinished tasks are given up"
                    )
                    raise self._lost from exc
                self._closed.wait(min(delay(), deadline - now))
                continue
            if deadline is not None:
                self._back()
            return result

    def _back(self) -> None:
        """Redis is back: check it still knows this master (else its data was lost)."""
        with self._lock:
            self.backend.setup()
            why = self.backend.resume_master(self.mid)
            if why:
                self._lost = ServiceLostError(
                    f"Redis at {self._where} came back without this master's tasks: {why}; "
                    "they are lost (run Redis with appendonly yes)"
                )
                raise self._lost
            log.warning("Redis at %s is back: master %d goes on", self._where, self.mid)

    def kick(self) -> None:
        self._wake.set()

    def _send_loop(self) -> None:
        assert self._end is not None
        send_outbox(self._end, self._wake, self._closed.is_set,
                    lambda part: self._call(self.backend.enqueue, self.mid, part))  # fmt: skip

    def _receive_loop(self) -> None:
        end = self._end
        assert end is not None
        after = "0-0"
        block = int(POLL_WAIT * 1000)
        while not end.finished() and not self._closed.is_set():
            try:
                got = self._call(self.backend.read_outcomes, self.mid, after, POLL_MAX, block)
                if got:
                    end.on_outcomes([outcome for _, outcome in got])
                    ids = [eid for eid, _ in got]
                    self._call(self.backend.confirm, self.mid, ids)
                    after = ids[-1]
            except Exception as exc:
                if not self._closed.is_set():
                    end.on_broken(exc)
                return

    def cancel(self, tids: list[int]) -> list[int]:
        return self._call(self.backend.cancel, self.mid, tids)

    def status(self) -> dict[str, Any]:
        return self._call(self.backend.status)

    def worker_count(self) -> int | None:
        return None

    def close(self) -> None:
        """Leave: this master's outcome stream goes; results of its tasks still running
        are dropped when they come."""
        self._closed.set()
        self._wake.set()
        try:
            self.backend.drop_master(self.mid)
        except Exception as exc:
            log.debug("goodbye to %s: %s", self._where, exc)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2 * POLL_WAIT)
        self.backend.close()


class RedisWorkerChannel(WorkerChannel):
    """A worker slot's way to a queue in Redis (one client of its own).

    The server being away is a ``ConnectionError``, so the slot joins again
    with backoff as it does for a task service.
    """

    def __init__(
        self, url: str, queue: str | None = None, held: dict[int, Any] | None = None
    ) -> None:
        self._closed = threading.Event()
        self.backend = self._guard(lambda: RedisBackend(url, queue, held=held))

    @classmethod
    def opener(cls, url: str, queue: str | None = None) -> Callable[[], RedisWorkerChannel]:
        """A worker's ``open_channel``: its slots' channels share what they leased, so a
        slot that reconnects still knows each lease's options when it reports."""
        held: dict[int, Any] = {}
        return lambda: cls(url, queue, held)

    def _guard(self, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except Exception as exc:
            if redis_down(exc):
                raise ConnectionError(f"Redis is away: {exc}") from exc
            raise

    def join(self, hello: WorkerHello) -> dict[str, Any]:
        joined = self._guard(lambda: self.backend.add_worker(hello))
        return {"worker": joined.worker, "resumed": joined.resumed, "reason": joined.reason,
                "store": self.backend.store_id,
                "heartbeat": self.backend.heartbeat_timeout / BEATS}  # fmt: skip

    def exchange(
        self, wid: str, reports: list[Report], want: int, wait: float
    ) -> list[Lease] | None:
        backend = self.backend

        def run() -> list[Lease]:
            backend.report(wid, reports)
            got = backend.lease(wid, want)
            if not got and wait > 0 and want > 0:
                got = backend.wait_lease(wid, want, wait)
            return got

        return self._guard(run)

    def heartbeat(self, wid: str, hold: float) -> dict[str, Any] | None:
        backend = self.backend
        def beat() -> None:
            backend.renew(wid)
            backend.refresh()

        self._guard(beat)
        self._closed.wait(min(hold, backend.heartbeat_timeout / BEATS))
        return {}

    def give_back(self, wid: str, tids: list[int]) -> None:
        self._guard(lambda: self.backend.give_back(wid, tids))

    def goodbye(self, wid: str, tids: list[int]) -> None:
        self._guard(lambda: self.backend.leave(wid, tids))

    def initializer_failed(self, wid: str, record: dict[str, Any]) -> None:
        """Never called: a join on a Redis queue names no initializer (an Executor with
        ``connect=`` refuses one), so there is nobody to tell."""
        raise NotImplementedError("a Redis queue hands its workers no initializer")

    def close(self) -> None:
        self._closed.set()
        self.backend.close()
