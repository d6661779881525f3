"""Threads for user methods that may block, so the event loop never does.

:class:`ElasticPool` hands each job to an idle thread, or starts a new one
when none is idle: a blocked call never makes another call wait (the stdlib
gets the same property from a thread per connection).  Threads that stay idle
for ``idle_timeout`` seconds exit, so a burst does not leave threads behind.
The most recently idle thread is reused first, so a steady load runs on few,
warm threads.

:class:`CallThread` is also used on its own as a connection's *sticky* thread:
objects whose methods care which thread calls them (``threading.RLock`` and
``threading.Condition`` check the owner thread) are always called from the
same thread for a given connection, as they would be with the stdlib.

:class:`ThreadGate` bounds how many of the pool's threads one connection's
calls hold at once (``ServerConfig.max_threads_per_connection``): past it,
its calls wait in order for one of its own threads, so one peer cannot make
the server start thousands of threads.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable

__all__ = ["CallThread", "ElasticPool", "ThreadGate"]

Job = Callable[[], None]


class CallThread:
    """One thread with a mailbox of jobs."""

    def __init__(self, name: str, pool: ElasticPool | None = None) -> None:
        self._mailbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._pool = pool
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._mailbox.put(job)

    def stop(self) -> None:
        self._mailbox.put(None)

    def _run(self) -> None:
        pool = self._pool
        while True:
            try:
                job = self._mailbox.get(timeout=pool.idle_timeout if pool else None)
            except queue.Empty:
                assert pool is not None
                if pool._retire(self):
                    return
                continue
            if job is None:
                return
            job()
            job = None  # let go of the job's arguments before waiting for the next
            if pool is not None:
                pool._idle_again(self)


class ElasticPool:
    """A thread pool that grows on demand and shrinks when idle."""

    def __init__(self, name: str = "distproc-call", idle_timeout: float = 30.0) -> None:
        self.name = name
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._idle: list[CallThread] = []
        self._started = 0
        self._closed = False

    @property
    def idle_threads(self) -> int:
        return len(self._idle)

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            thread = self._idle.pop() if self._idle else None
            if thread is None:
                self._started += 1
                name = f"{self.name}-{self._started}"
        if thread is None:
            thread = CallThread(name, self)
        thread.submit(job)

    def _idle_again(self, thread: CallThread) -> None:
        with self._lock:
            if self._closed:
                thread.stop()
            else:
                self._idle.append(thread)

    def _retire(self, thread: CallThread) -> bool:
        """Called by an idle thread that timed out: True if it may exit."""
        with self._lock:
            try:
                self._idle.remove(thread)
            except ValueError:
                return False  # just handed a job; it is in the mailbox
            return True

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for thread in idle:
            thread.stop()


class ThreadGate:
    """At most ``limit`` jobs of one connection on ``pool`` at once; the others wait in order.

    A thread that finishes one of the connection's jobs runs the next one that
    waits, so the connection never holds more than ``limit`` threads.
    """

    def __init__(self, pool: ElasticPool, limit: int) -> None:
        self._pool = pool
        self._limit = limit
        self._lock = threading.Lock()
        self._running = 0
        self._waiting: collections.deque[Job] = collections.deque()

    @property
    def running(self) -> int:
        """Threads that this connection's jobs hold now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Jobs of this connection that wait for one of its threads."""
        return len(self._waiting)

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._running >= self._limit:
                self._waiting.append(job)
                return
            self._running += 1
        try:
            self._pool.submit(lambda: self._run(job))
        except BaseException:
            with self._lock:
                self._running -= 1
            raise

    def _run(self, job: Job | None) -> None:
        while job is not None:
            job()
            with self._lock:
                if self._waiting:
                    job = self._waiting.popleft()
                else:
                    self._running -= 1
                    job = None

    def clear(self) -> None:
        """Drop the jobs that wait (their connection is gone)."""
        with self._lock:
            self._waiting.clear()
