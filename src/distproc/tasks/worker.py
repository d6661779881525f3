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
``MAX_BACKOFF`` s apart) and says hello with the worker id it had and the
tasks it still holds: a service that still knows it (a durable one that
restarted within ``heartbeat_timeout``, or one that has not timed it out)
gives it back its id and those leases, and the results it had not yet
reported are accepted.  Otherwise it joins under a new id and drops what it
held (the service requeued it).  It joins again once per loss, whichever of
its threads finds out first.  It says once that the service has gone and
once that it is back, not at every attempt.  A wrong authkey, or a server
that is not a task service, ends the worker on its first contact
(:func:`is_fatal`): retrying will not fix it.  After a first contact the
same is retried with backoff, said once.

The service's reply to a join may name an *initializer* (an Executor's
``initializer``/``initargs``): the worker runs it once per process, before
its first task (when that comes, as the stdlib's pool starts its processes
when tasks come).  One that raises is logged and reported to the service
(the Executor's pool is then broken, as the stdlib's is) and the worker ends.
With ``max_tasks`` (``max_tasks_per_child``) a process slot ends after that
many tasks, handing back what it prefetched; its supervisor starts another.

The first SIGTERM or SIGINT lets each slot finish its running task, hand
back its prefetched ones and exit; a second one exits at once (the service
requeues what was held).  A task run past its ``timeout`` is reported as
timed out; in a process slot the process then exits (its supervisor starts
another), in a thread slot the thread is left to finish and its result is
discarded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..addresses import format_address
from ..errors import (
    DistprocError,
    FrameTooLargeError,
    ProtocolError,
    StoreError,
    TaskTimeoutError,
)
from ..wire.framing import DEFAULT_MAX_FRAME
from .blocks import run_block
from .channels import MAX_BACKOFF, ServiceWorkerChannel, WorkerChannel, backoff_delays
from .host import describe_refusal
from .payloads import (
    PICKLE,
    PICKLED_CALLABLE,
    decode,
    describe_exception,
    encode,
    error_record,
    resolve,
)
from .records import (
    ERROR,
    OK,
    RETRY,
    TIMEOUT,
    UNAVAILABLE,
    Lease,
    Report,
    WorkerHello,
    split_by_size,
)

__all__ = ["MAX_BACKOFF", "TaskWorker", "is_fatal", "run_chunk"]

log = logging.getLogger("distproc.worker")

PREFETCH_SECONDS = 0.05
PREFETCH_MAX = 1000
#: Send results at least this often while a batch runs.
REPORT_EVERY = 0.02
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
#: Room left in a block's result for what travels with its output lines.
BLOCK_ENVELOPE = 1024


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


class TaskWorker:
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
        open_channel: Callable[[], WorkerChannel] | None = None,
        where: str | None = None,
    ) -> None:
        self.address = address
        #: A new channel for a slot (default: a connection to the task service at address).
        self.open_channel: Callable[[], WorkerChannel] = open_channel or (
            lambda: ServiceWorkerChannel(address, authkey)
        )
        self.where = where
        self.authkey = authkey
        self.slots = slots
        self.allow_pickle = allow_pickle
        self.process_slot = process_slot
        self.parent_pid = parent_pid
        self.exit_on_disconnect = exit_on_disconnect
        self.stopping = threading.Event()
        self.active: set[_WorkerSlot] = set()
        #: Functions this worker cannot import -> what went wrong.
        self.unavailable: dict[str, str] = {}
        #: Why the worker stopped on its first contact (see :func:`is_fatal`).
        self.refused: str | None = None
        self.joined = threading.Event()  # once any slot has joined the service
        self._said: frozenset[str] = frozenset()  # how the service went away, said once each
        self._lock = threading.Lock()
        self._init_lock = threading.Lock()
        self._init: tuple[str, bytes] | None = None  # the initializer's ref and payload
        self._initialized = False
        #: Set when the initializer raised: the worker ends with status 1.
        self.init_failed = False
        self.max_tasks: int | None = None  # a process slot's task limit, from the service
        self.tasks_run = 0

    # ----------------------------------------------------------- functions
    def function(self, ref: str) -> Callable[..., Any]:
        """The function ``ref`` names, or :class:`_Unavailable` if it cannot be imported here."""
        known = self.unavailable.get(ref)
        if known is not None:
            raise _Unavailable(known)
        try:
            fn: Callable[..., Any] = resolve(ref)
        except Exception as exc:
            error = describe_exception(exc)
            with self._lock:
                first = ref not in self.unavailable
                self.unavailable[ref] = error
            if first:
                log.warning(
                    "cannot import %s: %s; this worker runs none of its tasks (other "
                    "workers get them): run it where the module imports", ref, error,
                )  # fmt: skip
            raise _Unavailable(error) from None
        return fn

    def call_of(self, ref: str, payload: bytes) -> tuple[Callable[..., Any], Any, Any]:
        """The function, arguments and keyword arguments of a task (or an initializer)."""
        fn = None if ref == PICKLED_CALLABLE else self.function(ref)
        args, kwargs = decode(payload, self.allow_pickle)
        if fn is None and payload[:1] == PICKLE:
            fn, args = args[0], args[1:]
        if fn is None:
            raise ValueError(f"a task of {ref!r} came without its pickled callable")
        return fn, args, kwargs

    def set_up(self, reply: dict[str, Any]) -> None:
        """Take the task limit and the initializer that a join's reply names."""
        limit = reply.get("max_tasks")
        if self.process_slot and isinstance(limit, int) and limit > 0:
            self.max_tasks = limit
        init = reply.get("init")
        if init is not None and self._init is None:
            self._init = (str(init[0]), bytes(init[1]))

    def initialize(self, channel: WorkerChannel, wid: str) -> bool:
        """Run the initializer once, before this process's first task; False if it raised.

        It runs at the first task, not at the join: a pool's workers join when
        it is made, and the stdlib's pool starts its processes (which run the
        initializer) when tasks come.
        """
        with self._init_lock:
            if self._init is None or self._initialized:
                return not self.init_failed
            self._initialized = True
            try:
                fn, args, kwargs = self.call_of(*self._init)
                fn(*args, **kwargs)
            except Exception as exc:
                # The stdlib's pool logs this, on this logger, in the worker that failed.
                logging.getLogger("concurrent.futures").critical(
                    "Exception in initializer:", exc_info=True
                )
                self.init_failed = True
                self.stop()
                try:
                    channel.initializer_failed(wid, error_record(exc))
                except (OSError, EOFError) as lost:  # the worker ends either way
                    log.info("could not tell the task service: %s", lost)
            return not self.init_failed

    def ran_task(self) -> None:
        """One more task done: past ``max_tasks``, this process ends (another replaces it)."""
        with self._lock:
            self.tasks_run += 1
            over = self.max_tasks is not None and self.tasks_run >= self.max_tasks
        if over and not self.stopping.is_set():
            log.info("ran %d task(s) (max_tasks_per_child): this worker process ends",
                     self.tasks_run)  # fmt: skip
            self.stop()

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
        if self.init_failed:
            return 1
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
        return self.where or format_address(self.address)

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
        slot = _WorkerSlot(self)
        try:
            if slot.start():
                self.active.add(slot)
                slot.serve()
        finally:
            self.active.discard(slot)
            slot.stop()

    def _back(self) -> None:
        """A slot joined: say that the service is back, if it was said to be gone."""
        with self._lock:
            back, self._said = bool(self._said), frozenset()
        if back and self.joined.is_set():
            log.warning("the task service at %s is back: joined it again", self._where())
        self.joined.set()


class _WorkerSlot:
    """One slot: its worker id, buffer and unreported results, across connections.

    Whichever of its threads finds the connection gone connects again
    (:meth:`_reconnect`, one thread at a time) and says hello with what the
    slot holds, while a task may still be running: the buffer and the results
    go on with the new connection if the service gives the slot its leases back.
    """

    def __init__(self, worker: TaskWorker) -> None:
        self.worker = worker
        self.channel: WorkerChannel | None = None
        self.buffer: deque[Lease] = deque()
        self.lock = threading.Lock()
        self.results: list[Report] = []
        self.results_since = 0.0  # when the oldest unreported result was added
        self.refilling = threading.Lock()  # held by the monitor while it refills the buffer
        self.joining = threading.Lock()  # one thread joins again, the others wait for it
        self.avg = 0.0  # seconds per task, smoothed
        self.closed = threading.Event()  # the slot stops: its threads end
        #: The running task as (sequence number, id, attempt, started, deadline).
        self.current: tuple[int, int, int, float, float | None] | None = None
        self.seq = 0
        self.timed_out = 0  # the sequence number of a task reported as timed out
        self.wid = ""
        self.store = ""
        self.interval = 1.0

    # --------------------------------------------------------- connection
    def start(self) -> bool:
        """Connect and join, waiting for the service; False if the worker stops meanwhile."""
        if not self._connect():
            return False
        for target, name in ((self._heartbeat, "distproc-hb"),
                             (self._monitor, "distproc-monitor")):  # fmt: skip
            threading.Thread(target=target, name=name, daemon=True).start()
        return True

    def _connect(self) -> bool:
        """Open a channel and join (again), with backoff until it works or the worker stops."""
        worker = self.worker
        delay = backoff_delays()
        while not worker.stopping.is_set() and not self.closed.is_set():
            if worker._parent_gone():
                return False
            try:
                self.channel = worker.open_channel()
                self.hello()
            except Exception as exc:
                fatal = is_fatal(exc)
                if fatal and not worker.joined.is_set():
                    worker.refused = describe_refusal(worker.address, exc)
                    worker.stopping.set()
                    return False
                if not fatal and not isinstance(exc, (OSError, EOFError)):
                    raise
                if worker.exit_on_disconnect:
                    return False
                worker._gone("refused by" if fatal else "cannot reach", exc)
                worker.stopping.wait(delay())
                continue
            worker._back()
            return True
        return False

    def _reconnect(self, failed: WorkerChannel | None, exc: BaseException) -> bool:
        """The connection of ``failed`` is gone: connect again (or see that another thread
        did).  False if the slot must stop instead."""
        with self.joining:
            if self.channel is not failed:
                return not self.closed.is_set()
            if failed is not None:
                failed.close()
            if self.worker.exit_on_disconnect or self.worker._parent_gone():
                self.closed.set()
                return False
            self.worker._gone("lost", exc)
            if self._connect():
                return True
            self.closed.set()
            return False

    def stop(self) -> None:
        self.closed.set()
        if self.channel is not None:
            self.channel.close()

    def _service(self) -> WorkerChannel:
        channel = self.channel
        if channel is None:
            raise ConnectionError("the slot is not connected")
        return channel

    def hello(self) -> None:
        """Join, or come back as ``self.wid`` with what this slot still holds."""
        with self.lock:
            holding = [lease.task for lease in self.buffer]
            holding += [report.task for report in self.results]
        current = self.current
        if current is not None:
            holding.append(current[1])
        info = WorkerHello(
            host=socket.gethostname(), pid=os.getpid(), slots=1,
            quarantined=dict(self.worker.unavailable),
            resume=(self.store, self.wid) if self.wid else None, holding=tuple(holding),
        )  # fmt: skip
        reply = self._service().join(info)
        old, self.wid = self.wid, str(reply["worker"])
        self.store = str(reply.get("store", ""))
        self.interval = float(reply["heartbeat"])
        self.worker.set_up(reply)
        if old and reply.get("resumed"):
            log.info("back at the task service at %s as %s, with %d task(s)",
                     self.worker._where(), self.wid, len(holding))  # fmt: skip
            return
        if old:
            with self.lock:
                dropped = len(self.buffer) + len(self.results)
                self.buffer.clear()
                self.results.clear()
            why = reply.get("reason") or "its leases were given to others"
            # Said at WARNING only when work is dropped: that is news.
            log.log(logging.WARNING if dropped else logging.INFO,
                    "the task service did not know %s any more (%s): joined as %s; dropped "
                    "%d task(s) it had requeued", old, why, self.wid, dropped)  # fmt: skip
        else:
            log.info("joined the task service at %s as %s", self.worker._where(), self.wid)

    def _rejoin(self, wid: str) -> None:
        """The service does not know ``wid`` here: join again, once for all threads."""
        with self.joining:
            if self.wid == wid:
                self.hello()

    # --------------------------------------------------------------- tasks
    def _want(self) -> int:
        if self.avg <= 0:
            return 1
        return max(1, min(PREFETCH_MAX, int(PREFETCH_SECONDS / self.avg)))

    def _exchange(self, want: int, wait: float) -> None:
        """Report the results in hand and take up to ``want`` tasks.

        Results whose call fails stay in hand, for the next call or the next
        connection; ``None`` from the service means "join again".
        """
        with self.lock:
            results, self.results = self.results, []
        runs = split_by_size(results, lambda r: len(r.payload)) or [[]]
        wid = self.wid
        tasks: list[Lease] = []
        for i, part in enumerate(runs):  # many large results: in calls of a bounded size
            last = i == len(runs) - 1
            try:
                got = self._service().exchange(wid, part, want if last else 0,
                                               wait if last else 0.0)  # fmt: skip
            except StoreError as exc:  # the service cannot store them now: try again later
                self._keep(runs[i:])
                log.warning("%s; this worker keeps its result(s) and tries again", exc)
                self.closed.wait(1.0)
                return
            except BaseException:
                self._keep(runs[i:])
                raise
            if got is None:
                self._keep(runs[i:])
                self._rejoin(wid)
                return
            tasks = got
        with self.lock:
            self.buffer.extend(tasks)

    def _keep(self, runs: list[list[Report]]) -> None:
        with self.lock:
            self.results[:0] = [report for run in runs for report in run]

    def serve(self) -> None:
        """Run tasks from the buffer; when it is empty, ask for more (and wait for them).

        While the buffer holds tasks, the monitor thread reports results and
        refills it in the background, so this thread does not wait on the network.
        """
        worker = self.worker
        while not self.closed.is_set():
            if worker.stopping.is_set():
                self._goodbye()
                return
            with self.lock:
                task = self.buffer.popleft() if self.buffer else None
            if task is None:
                if worker._parent_gone():
                    return
                channel = self.channel
                try:
                    self._exchange(self._want(), IDLE_WAIT)
                except (OSError, EOFError) as exc:
                    if not self._reconnect(channel, exc):
                        return
                continue
            self._run(task)

    def hand_back(self) -> None:
        """Return the prefetched tasks and take no more (the worker is stopping)."""
        with self.lock:
            unstarted = [lease.task for lease in self.buffer]
            self.buffer.clear()
        self._service().goodbye(self.wid, unstarted)

    def _goodbye(self) -> None:
        with self.refilling, self.lock:
            unstarted = [lease.task for lease in self.buffer]
            self.buffer.clear()
            results, self.results = self.results, []
        try:
            if results:
                self._service().exchange(self.wid, results, 0, 0.0)
            self._service().goodbye(self.wid, unstarted)
        except (OSError, EOFError) as exc:  # the service requeues what we held
            log.info("could not say goodbye to the task service: %s", exc)

    def _run(self, task: Lease) -> None:
        if not self.worker.initialize(self._service(), self.wid):
            return  # the pool is broken: the service requeues the task when this worker ends
        tid, attempt, ref, payload = task.task, task.attempt, task.fn, task.payload
        opts = task.options
        codec = payload[:1]
        timeout = opts.timeout
        started = time.perf_counter()
        self.seq = seq = self.seq + 1
        self.current = (seq, tid, attempt, started, started + float(timeout) if timeout else None)
        try:
            fn, args, kwargs = self.worker.call_of(ref, payload)
            if opts.chunk:
                value = run_chunk(fn, *args)
            elif opts.block:
                data, first_line, star, records = args
                value = run_block(fn, data, first_line, star, records, MAX_RESULT - BLOCK_ENVELOPE)
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
            status = RETRY if _matches(exc, opts.retry_on) else ERROR
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
            self.results.append(Report(tid, attempt, status, out))
        self.worker.ran_task()

    # ------------------------------------------------------------- monitor
    def _monitor(self) -> None:
        """Report results and refill the buffer in the background; watch the running task.

        Results wait at most ``REPORT_EVERY`` (about, at ``MONITOR_TICK``), the
        buffer is refilled when it runs down to half the prefetch (and while a
        task runs, it holds the next one, so that a slot whose tasks take longer
        than the prefetch does not wait a round trip between them; not before a
        task has been seen to end, as one of unknown length may run for good), a task that
        runs long hands back the prefetched ones (other workers may take them),
        and a task past its deadline is stopped.
        """
        handed = asked = 0
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
                            unstarted = [lease.task for lease in self.buffer]
                            self.buffer.clear()
                        if unstarted:
                            self._service().give_back(self.wid, unstarted)
                want = self._want()
                with self.lock:
                    held = len(self.buffer)
                    due = bool(self.results) and now - self.results_since >= REPORT_EVERY
                # Low: half the prefetch left, or none while a task runs (the next one is
                # then at hand when it ends: asked once per task, unless it runs long).
                running = (
                    current is not None and self.avg > 0 and current[0] not in (handed, asked)
                )
                low = held <= want // 2 and (held > 0 or running)
                if low and held == 0 and current is not None:
                    asked = current[0]
                if due or low:
                    with self.refilling:  # _goodbye waits for this: no task lands after it
                        low = low and not self.worker.stopping.is_set()
                        self._exchange(max(1, want - held) if low else 0, 0.0)
            except Exception as exc:
                log.debug("monitor: %s", exc)  # the connection is gone: the slot finds out

    def _timed_out(self, tid: int, attempt: int) -> None:
        exc = TaskTimeoutError(f"task {tid} ran past its timeout and was stopped")
        record = encode(error_record(exc), b"n")
        with self.lock:
            results, self.results = self.results, []
            unstarted = [lease.task for lease in self.buffer]
            if self.worker.process_slot:
                self.buffer.clear()
        results.append(Report(tid, attempt, TIMEOUT, record))
        try:
            self._service().exchange(self.wid, results, 0, 0.0)
            if self.worker.process_slot:
                self._service().goodbye(self.wid, unstarted)
        except Exception as exc2:
            log.warning("could not report a timed-out task: %s", exc2)
        if self.worker.process_slot:
            log.warning("task %d ran past its timeout: this process exits", tid)
            logging.shutdown()
            os._exit(EXIT_TIMEOUT)

    # ----------------------------------------------------------- heartbeat
    def _heartbeat(self) -> None:
        """Keep the leases alive; connect again when the connection goes, even while a
        task runs (a durable service gives back the leases of a worker that returns in time)."""
        while not self.closed.is_set():
            channel = self.channel
            try:
                news = self._service().heartbeat(self.wid, self.interval)
            except (OSError, EOFError) as exc:
                if not self._reconnect(channel, exc):
                    return
                continue
            except Exception as exc:
                log.debug("heartbeat: %s", exc)
                self.closed.wait(self.interval)
                continue
            if news is None:
                self.closed.wait(self.interval)  # the slot joins again on its next exchange
                continue
            give = news.get("give_back", 0)
            if give:
                with self.lock:
                    back = [self.buffer.pop().task for _ in range(min(give, len(self.buffer)))]
                if back:
                    back.reverse()
                    with contextlib.suppress(Exception):
                        self._service().give_back(self.wid, back)
            if self.worker._parent_gone():
                self.worker.stopping.set()


def _matches(exc: BaseException, names: Any) -> bool:
    if not names:
        return False
    wanted = set(names)
    return any(f"{c.__module__}:{c.__qualname__}" in wanted for c in type(exc).__mro__)
