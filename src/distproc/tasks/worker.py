"""The worker runtime: lease tasks from a task service, run them, send results back.

One *slot* runs one task at a time on one thread, under a worker id of its
own: it leases tasks in batches sized from the durations it measures (about
``PREFETCH_SECONDS`` of work, at most ``PREFETCH_MAX`` tasks), runs them in
lease order and sends their results with its next request for tasks.  A
heartbeat thread per slot keeps its leases alive and hands back unstarted
tasks when the service asks for them (another worker is idle).

* ``distproc worker HOST:PORT -c N`` (processes, the default) supervises N
  child processes of one slot each (:mod:`.fleet`); a child that dies is
  replaced, and its tasks go back to the queue when its connection drops.
* ``--threads`` runs N slots as threads of one process.

A function that a worker cannot import (its module is missing here, fails
to import, or lacks the name) is reported to the service as *unavailable*:
the service gives the task to another worker and this one none of that
function's tasks again.  The worker says so once, at WARNING, and keeps the
verdict for as long as it runs (it tells the service again when it rejoins).

A slot whose connection fails reconnects with exponential backoff (at most
``MAX_BACKOFF`` s apart); tasks it held were requeued by the service.  It
says once that the service has gone and once that it is back, not at every
attempt.  A wrong authkey, or a server that is not a task service, ends the
worker on its first contact (:func:`is_fatal`): retrying will not fix it.
After a first contact the same is retried with backoff, said once.  The
first SIGTERM or SIGINT lets each slot finish its running task, hand back
its prefetched ones and exit; a second one exits at once (the service
requeues what was held).  A task run past its ``timeout`` is reported as
timed out; in a process slot the process then exits (its supervisor starts
another), in a thread slot the thread is left to finish and its result is
discarded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..addresses import format_address
from ..errors import DistprocError, FrameTooLargeError, ProtocolError, TaskTimeoutError
from ..wire.framing import DEFAULT_MAX_FRAME
from .allowlist import AllowList, NotAllowedError
from .host import connect_service, describe_refusal
from .payloads import (
    PICKLE,
    PICKLED_CALLABLE,
    decode,
    describe_exception,
    encode,
    error_record,
    resolve,
)
from .service import ERROR, OK, RETRY, TIMEOUT, UNAVAILABLE, split_by_size

__all__ = ["MAX_BACKOFF", "Worker", "is_fatal", "run_chunk"]

log = logging.getLogger("distproc.worker")

PREFETCH_SECONDS = 0.05
PREFETCH_MAX = 1000
#: Send results at least this often while a batch runs.
REPORT_EVERY = 0.02
MAX_BACKOFF = 5.0
#: How long a slot with nothing to do waits in one request for tasks.
IDLE_WAIT = 1.0
#: How often a slot's monitor looks at the running task.
MONITOR_TICK = 0.01
#: A task running this long (or ten times the usual) hands back prefetched ones.
LONG_TASK = 1.0
#: Exit status of a process slot that stopped a task past its timeout.
EXIT_TIMEOUT = 75
#: A result larger than this (encoded) cannot reach the service in one frame.
MAX_RESULT = DEFAULT_MAX_FRAME - 64 * 1024


class _Unavailable(Exception):
    """This worker cannot import a task's function; ``str()`` says what went wrong."""


def is_fatal(exc: BaseException) -> bool:
    """Whether connecting failed for good: a wrong authkey, a peer that is not
    distproc, a server with no task service (retrying will not fix these)."""
    if isinstance(exc, ProtocolError):
        return True
    return isinstance(exc, DistprocError) and not isinstance(exc, (OSError, EOFError))


def run_chunk(fn: Callable[..., Any], calls: list[Any]) -> list[Any]:
    """Run ``fn`` on each argument list of ``calls`` (a ``map`` chunk).

    Returns ``[seconds, outcomes]``: the time the chunk took, for the master
    to size the next chunks, and one ``[status, value]`` per call.
    """
    started = time.perf_counter()
    out: list[Any] = []
    for args in calls:
        try:
            out.append([OK, fn(*args)])
        except Exception as exc:
            out.append([ERROR, error_record(exc)])
    return [time.perf_counter() - started, out]


class Worker:
    """Serve a task service with ``slots`` slots; see the module docstring."""

    def __init__(
        self,
        address: tuple[str, int],
        authkey: bytes,
        *,
        slots: int = 1,
        allow_pickle: bool = False,
        process_slot: bool = True,
        parent_pid: int | None = None,
        exit_on_disconnect: bool = False,
        allowed: AllowList | None = None,
    ) -> None:
        self.address = address
        #: What this worker may run (``None``: anything; see :mod:`.allowlist`).
        self.allowed = allowed
        self.authkey = authkey
        self.slots = slots
        self.allow_pickle = allow_pickle
        self.process_slot = process_slot
        self.parent_pid = parent_pid
        self.exit_on_disconnect = exit_on_disconnect
        self.stopping = threading.Event()
        self.active: set[_Slot] = set()
        #: Functions this worker cannot import -> what went wrong.
        self.unavailable: dict[str, str] = {}
        #: Why the worker stopped on its first contact (see :func:`is_fatal`).
        self.refused: str | None = None
        self.joined = threading.Event()  # once any slot has joined the service
        self._said: frozenset[str] = frozenset()  # how the service went away, said once each
        self._lock = threading.Lock()

    # ----------------------------------------------------------- functions
    def function(self, ref: str) -> Callable[..., Any]:
        """The function ``ref`` names, or :class:`_Unavailable` if it cannot be imported here."""
        known = self.unavailable.get(ref)
        if known is not None:
            raise _Unavailable(known)
        try:
            if self.allowed is not None:
                self.allowed.check(ref)  # before anything is imported
            fn: Callable[..., Any] = resolve(ref)
            if self.allowed is not None:
                self.allowed.check_resolved(ref, fn)
        except Exception as exc:
            refused = isinstance(exc, NotAllowedError)
            error = str(exc) if refused else describe_exception(exc)
            with self._lock:
                first = ref not in self.unavailable
                self.unavailable[ref] = error
            if first and refused:
                log.warning("%s; other workers may run its tasks", error)
            elif first:
                log.warning(
                    "cannot import %s: %s; this worker runs none of its tasks (other "
                    "workers get them): run it where the module imports", ref, error,
                )  # fmt: skip
            raise _Unavailable(error) from None
        return fn

    # ------------------------------------------------------------- running
    def run(self) -> int:
        """Run until stopped; return the exit status.

        :attr:`refused` is set when the first contact failed for good (see
        :func:`is_fatal`): the caller says why.
        """
        threads = [
            threading.Thread(target=self._slot_main, name=f"distproc-slot-{i}", daemon=True)
            for i in range(1, self.slots)
        ]
        for thread in threads:
            thread.start()
        self._slot_main()
        for thread in threads:
            thread.join()
        return 0 if self.refused is None else 2

    def stop(self) -> None:
        """Finish running tasks, hand back prefetched ones, then return from :meth:`run`."""
        self.stopping.set()

    def _hand_back(self) -> None:
        for slot in list(self.active):
            try:
                slot.hand_back()
            except Exception as exc:
                log.info("could not hand back prefetched tasks: %s", exc)

    def install_signal_handlers(self) -> None:
        """First SIGTERM/SIGINT: :meth:`stop`; the second: exit at once."""

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stopping.is_set():
                os._exit(128 + signum)
            log.info("stopping: finishing running tasks (signal again to stop at once)")
            self.stop()
            # Hand back prefetched tasks now, from a thread: this handler may
            # have interrupted the main thread while it holds a slot's lock.
            threading.Thread(target=self._hand_back, daemon=True).start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _parent_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def _where(self) -> str:
        return format_address(self.address)

    def _gone(self, what: str, exc: BaseException) -> None:
        """Say once that the service went away (or cannot be reached), once that it refuses us."""
        kind = "refused" if what.startswith("refused") else "away"
        with self._lock:
            first, self._said = kind not in self._said, self._said | {kind}
        if first:
            log.warning("%s the task service at %s (%s); trying again until it is back",
                        what, self._where(), exc)  # fmt: skip
        else:
            log.debug("%s the task service at %s (%s)", what, self._where(), exc)

    def _slot_main(self) -> None:
        backoff = 0.1
        while not self.stopping.is_set():
            if self._parent_gone():
                return
            try:
                slot = _Slot(self)
            except Exception as exc:
                fatal = is_fatal(exc)
                if fatal and not self.joined.is_set():
                    self.refused = describe_refusal(self.address, exc)
                    self.stopping.set()
                    return
                if not fatal and not isinstance(exc, (OSError, EOFError)):
                    raise
                if self.exit_on_disconnect:
                    return
                self._gone("refused by" if fatal else "cannot reach", exc)
                self.stopping.wait(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = 0.1
            with self._lock:
                back, self._said = bool(self._said), frozenset()
            if back and self.joined.is_set():
                log.warning("the task service at %s is back: joined it again", self._where())
            self.joined.set()
            self.active.add(slot)
            try:
                slot.serve()
                return  # stopped
            except (OSError, EOFError) as exc:
                if self.exit_on_disconnect or self._parent_gone():
                    return
                self._gone("lost", exc)
            finally:
                self.active.discard(slot)
                slot.close()


class _Slot:
    """One slot's connection, worker id, buffer and heartbeat."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.manager, self.service = connect_service(worker.address, worker.authkey)
        self.buffer: deque[list[Any]] = deque()
        self.lock = threading.Lock()
        self.results: list[list[Any]] = []  # [task id, attempt, status, payload]
        self.results_since = 0.0  # when the oldest unreported result was added
        self.refilling = threading.Lock()  # held by the monitor while it refills the buffer
        self.avg = 0.0  # seconds per task, smoothed
        self.closed = threading.Event()
        #: The running task as (sequence number, id, attempt, started, deadline).
        self.current: tuple[int, int, int, float, float | None] | None = None
        self.seq = 0
        self.timed_out = 0  # the sequence number of a task reported as timed out
        self.hello()
        self.heartbeat = threading.Thread(target=self._heartbeat, name="distproc-hb", daemon=True)
        self.heartbeat.start()
        self.monitor = threading.Thread(target=self._monitor, name="distproc-monitor", daemon=True)
        self.monitor.start()

    def hello(self) -> None:
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slots": 1,
            "quarantined": dict(self.worker.unavailable),
        }
        reply = self.service.hello_worker(info)
        self.wid: str = reply["worker"]
        self.interval: float = float(reply["heartbeat"])
        log.info("joined the task service at %s as %s", self.worker.address, self.wid)

    def close(self) -> None:
        self.closed.set()
        self.service = None  # drops this slot's reference to the service object

    # --------------------------------------------------------------- tasks
    def _want(self) -> int:
        if self.avg <= 0:
            return 1
        return max(1, min(PREFETCH_MAX, int(PREFETCH_SECONDS / self.avg)))

    def _exchange(self, want: int, wait: float) -> None:
        with self.lock:
            results, self.results = self.results, []
        *before, last = split_by_size(results, lambda r: len(r[3])) or [[]]
        for part in before:  # many large results: in several calls of a bounded size
            self.service.exchange(self.wid, part, 0, 0.0)
        tasks = self.service.exchange(self.wid, last, want, wait)
        if tasks is None:  # the service gave our leases away (missed heartbeats)
            log.warning("the task service forgot %s (missed heartbeats); joining again", self.wid)
            with self.lock:
                self.buffer.clear()
            self.hello()
            return
        with self.lock:
            self.buffer.extend(tasks)

    def serve(self) -> None:
        """Run tasks from the buffer; when it is empty, ask for more (and wait for them).

        While the buffer holds tasks, the monitor thread reports results and
        refills it in the background, so this thread does not wait on the network.
        """
        worker = self.worker
        while True:
            if worker.stopping.is_set():
                self._goodbye()
                return
            with self.lock:
                task = self.buffer.popleft() if self.buffer else None
            if task is None:
                if worker._parent_gone():
                    return
                self._exchange(self._want(), IDLE_WAIT)
                continue
            self._run(task)

    def hand_back(self) -> None:
        """Return the prefetched tasks and take no more (the worker is stopping)."""
        with self.lock:
            unstarted = [task[0] for task in self.buffer]
            self.buffer.clear()
        self.service.goodbye(self.wid, unstarted)

    def _goodbye(self) -> None:
        with self.refilling, self.lock:
            unstarted = [task[0] for task in self.buffer]
            self.buffer.clear()
            results, self.results = self.results, []
        if results:
            self.service.exchange(self.wid, results, 0, 0.0)
        self.service.goodbye(self.wid, unstarted)

    def _run(self, task: list[Any]) -> None:
        tid, attempt, ref, payload, opts = task
        codec = payload[:1]
        timeout = opts.get("timeout") if isinstance(opts, dict) else None
        started = time.perf_counter()
        self.seq = seq = self.seq + 1
        self.current = (seq, tid, attempt, started, started + float(timeout) if timeout else None)
        try:
            fn = None if ref == PICKLED_CALLABLE else self.worker.function(ref)
            args, kwargs = decode(payload, self.worker.allow_pickle)
            if fn is None and codec == PICKLE:
                fn, args = args[0], args[1:]
            if fn is None:
                raise ValueError(f"a task of {ref!r} came without its pickled callable")
            if isinstance(opts, dict) and opts.get("chunk"):
                value = run_chunk(fn, *args)
            else:
                value = fn(*args, **kwargs)
            status, out = OK, encode(value, codec)
            if len(out) > MAX_RESULT:
                raise FrameTooLargeError(
                    f"the result takes {len(out):,} bytes encoded; a result can take at most "
                    f"{MAX_RESULT:,} (the frame limit, less room for its envelope): return "
                    "large data another way, such as a path or URL"
                )
        except _Unavailable as exc:
            status, out = UNAVAILABLE, str(exc).encode()  # for the service, which reads it
        except Exception as exc:
            status = RETRY if _matches(exc, opts.get("retry_on") if opts else None) else ERROR
            out = encode(error_record(exc), b"n")
        finally:
            self.current = None
        if self.timed_out == seq:
            return  # already reported (a thread slot cannot stop its task)
        elapsed = time.perf_counter() - started
        self.avg = elapsed if self.avg <= 0 else self.avg * 0.8 + elapsed * 0.2
        with self.lock:
            if not self.results:
                self.results_since = time.perf_counter()
            self.results.append([tid, attempt, status, out])

    # ------------------------------------------------------------- monitor
    def _monitor(self) -> None:
        """Report results and refill the buffer in the background; watch the running task.

        Results wait at most ``REPORT_EVERY`` (about, at ``MONITOR_TICK``), the
        buffer is refilled when it runs down to half the prefetch, a task that
        runs long hands back the prefetched ones (other workers may take them),
        and a task past its deadline is stopped.
        """
        handed = 0
        while not self.closed.wait(MONITOR_TICK):
            now = time.perf_counter()
            try:
                current = self.current
                if current is not None:
                    seq, tid, attempt, started, deadline = current
                    if deadline is not None and now >= deadline and self.timed_out != seq:
                        self.timed_out = seq
                        self._timed_out(tid, attempt)
                        continue
                    if seq != handed and now - started >= max(LONG_TASK, 10 * self.avg):
                        handed = seq
                        with self.lock:
                            unstarted = [task[0] for task in self.buffer]
                            self.buffer.clear()
                        if unstarted:
                            self.service.give_back(self.wid, unstarted)
                want = self._want()
                with self.lock:
                    held = len(self.buffer)
                    due = bool(self.results) and now - self.results_since >= REPORT_EVERY
                if due or 0 < held <= want // 2:
                    with self.refilling:  # _goodbye waits for this: no task lands after it
                        low = 0 < held <= want // 2 and not self.worker.stopping.is_set()
                        self._exchange(want - held if low else 0, 0.0)
            except Exception as exc:
                log.debug("monitor: %s", exc)  # the connection is gone: the slot finds out

    def _timed_out(self, tid: int, attempt: int) -> None:
        exc = TaskTimeoutError(f"task {tid} ran past its timeout and was stopped")
        record = encode(error_record(exc), b"n")
        with self.lock:
            results, self.results = self.results, []
            unstarted = [task[0] for task in self.buffer]
            if self.worker.process_slot:
                self.buffer.clear()
        results.append([tid, attempt, TIMEOUT, record])
        try:
            self.service.exchange(self.wid, results, 0, 0.0)
            if self.worker.process_slot:
                self.service.goodbye(self.wid, unstarted)
        except Exception as exc2:
            log.warning("could not report a timed-out task: %s", exc2)
        if self.worker.process_slot:
            log.warning("task %d ran past its timeout: this process exits", tid)
            logging.shutdown()
            os._exit(EXIT_TIMEOUT)

    # ----------------------------------------------------------- heartbeat
    def _heartbeat(self) -> None:
        while not self.closed.is_set():
            try:
                news = self.service.heartbeat(self.wid, self.interval)
            except Exception:
                return  # the connection is gone: the slot's next call finds out
            if news is None:
                self.closed.wait(self.interval)  # the slot joins again on its next exchange
                continue
            give = news.get("give_back", 0)
            if give:
                with self.lock:
                    back = [self.buffer.pop()[0] for _ in range(min(give, len(self.buffer)))]
                if back:
                    back.reverse()
                    with contextlib.suppress(Exception):
                        self.service.give_back(self.wid, back)
            if self.worker._parent_gone():
                self.worker.stopping.set()


def _matches(exc: BaseException, names: Any) -> bool:
    if not names:
        return False
    wanted = set(names)
    return any(f"{c.__module__}:{c.__qualname__}" in wanted for c in type(exc).__mro__)
