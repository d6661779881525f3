"""The task service: a queue of tasks whose leases belong to live workers.

Every task is always in exactly one state: *queued*, *leased* to one worker
connection, or finished (*done*, *failed*, *dead-lettered* or *cancelled*,
at which point its result has gone to its master and the service forgets
it).  The service runs on the server's event loop, so it needs no locks: its
network methods are *loop methods* (see :mod:`distproc.server.calls`), called
on the loop with the pending call, which they answer now or later.

A lease ends in one of three ways:

* the worker sends the task's result: it is accepted only while that exact
  lease (task, attempt, worker) is current, so a late result from a lost
  lease is discarded and every task completes once;
* the worker's connection drops, or it misses heartbeats for
  ``heartbeat_timeout``: every task it held goes back to the front of the
  queue at once, and the loss is written in the task's history;
* the worker gives unstarted tasks back (work stealing, or a graceful stop),
  or says it cannot import the task's function (see below).

A worker reports each result before it leases again, so a worker lost with a
single lease was running that task: the task gets a *strike*.  A worker lost
with several leases (a prefetched batch) makes each of them a *suspect*, which
then runs alone on a worker that holds nothing else, so the next loss is
blamed on the right task.  A task with ``max_attempts`` strikes is
dead-lettered: its master gets a "lost" result naming the workers and how
they ended.

A worker that cannot import a task's function (the module is missing there,
fails to import, or lacks the name) is not the task's fault: the worker
reports the task *unavailable*, the task goes back to the front of the queue
with no strike, and the function is *quarantined* on that worker, which is
given none of its tasks again (``distproc status`` lists it).  When every
connected worker has quarantined a function, for ``UNAVAILABLE_GRACE``
seconds with no worker joining, its tasks fail: their master gets an
*unavailable* result naming each worker and what it said.

Masters place tasks at the back of the queue, or with the ``front`` option at
its front (the calls of a ``map`` chunk whose worker was lost).

Payloads (a task's function and arguments, a result) are opaque bytes to the
service: it never decodes what masters and workers send each other.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = [
    "ERROR",
    "LOST",
    "OK",
    "RETRY",
    "TIMEOUT",
    "UNAVAILABLE",
    "TaskService",
    "check_options",
    "split_by_size",
]

log = logging.getLogger("distproc.tasks")

#: Result statuses, as workers report them and masters receive them.
OK, ERROR, RETRY, TIMEOUT, LOST, CANCELLED = "ok", "error", "retry", "timeout", "lost", "cancelled"
#: From a worker: it cannot import the task's function (the payload is its error,
#: a str).  To a master: no worker can (the payload names each and its error).
UNAVAILABLE = "unavailable"
_FINAL = frozenset((OK, ERROR, TIMEOUT))

_QUEUED, _LEASED, _DELAYED = range(3)

#: Masters number their tasks from ``master << ID_BITS``.
ID_BITS = 40

#: How many dead letters the service keeps for inspection.
DEAD_LETTERS_KEPT = 1000

#: Seconds that every connected worker must have quarantined a function, with
#: no worker joining, before its tasks fail (a worker that can import it may be
#: starting).
UNAVAILABLE_GRACE = 5.0
#: A lease skips at most this many queued tasks that its worker has quarantined.
QUARANTINE_SCAN = 256
#: A batch of tasks or results in one reply holds about this many payload bytes
#: at most (a single larger one goes alone): far below any frame limit.
BATCH_BYTES = 8 * 1024 * 1024

Result = list[Any]  # [task id, status, payload]


def split_by_size(items: list[Any], size: Callable[[Any], int]) -> list[list[Any]]:
    """``items`` in runs of at most BATCH_BYTES of ``size(item)`` (at least one each)."""
    out: list[list[Any]] = []
    run: list[Any] = []
    total = 0
    for item in items:
        n = size(item)
        if run and total + n > BATCH_BYTES:
            out.append(run)
            run, total = [], 0
        run.append(item)
        total += n
    if run:
        out.append(run)
    return out


def _size(payload: Any) -> int:
    return len(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else 0


def check_options(max_attempts: int, heartbeat_timeout: float) -> None:
    """Refuse a service's options that could never work."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if heartbeat_timeout <= 0:
        raise ValueError("heartbeat_timeout must be positive")


class _Task:
    __slots__ = ("attempt", "fn", "history", "id", "master", "max_attempts", "opts", "payload",
                 "retries", "state", "strikes", "suspect", "worker")  # fmt: skip

    def __init__(self, tid: int, master: int, fn: str, payload: bytes, opts: Any) -> None:
        self.id = tid
        self.master = master
        self.fn = fn
        self.payload = payload
        self.opts: dict[str, Any] = opts if isinstance(opts, dict) else {}
        self.attempt = 0
        self.state = _QUEUED
        self.worker = ""
        history = self.opts.get("history")
        self.history: list[tuple[str, str]] = (
            [(str(a), str(b)) for a, b in history] if isinstance(history, list) else []
        )
        self.retries = 0
        #: Lost workers that certainly ran this task (it was their only lease);
        #: a master may start a task with some (the rest of a lost ``map`` chunk).
        self.strikes = int(self.opts.get("strikes", 0))
        self.max_attempts = int(self.opts.get("max_attempts", 0))
        #: Held by a worker that was lost with other leases too: it may be the
        #: task that took the worker down, so it runs alone until it finishes.
        self.suspect = False


class _Worker:
    __slots__ = (
        "done",
        "give_back",
        "hb",
        "host",
        "id",
        "label",
        "last_seen",
        "leases",
        "leaving",
        "pid",
        "quarantined",
        "since",
        "slots",
        "waiter",
    )  # fmt: skip

    def __init__(self, wid: str, info: dict[str, Any]) -> None:
        self.id = wid
        self.host = str(info.get("host", "?"))
        self.pid = int(info.get("pid", 0))
        self.slots = max(1, int(info.get("slots", 1)))
        self.label = f"{wid} ({self.host} pid {self.pid})"
        self.leases: dict[int, float] = {}  # task id -> leased at, oldest first
        self.done = 0
        self.last_seen = self.since = time.monotonic()
        self.leaving = False
        self.give_back = 0
        self.waiter: _Held | None = None  # an exchange waiting for tasks
        self.hb: _Held | None = None  # a heartbeat held until there is news
        #: Functions this worker cannot import -> what it said.
        said = info.get("quarantined")
        self.quarantined: dict[str, str] = (
            {str(k): str(v) for k, v in said.items()} if isinstance(said, dict) else {}
        )


class _Held:
    """A call held on the loop until there is something to answer, or a deadline."""

    __slots__ = ("call", "timer", "want")

    def __init__(self, call: Any, want: int = 0) -> None:
        self.call = call
        self.want = want
        self.timer: asyncio.TimerHandle | None = None

    def answer(self, value: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.call.reply(value)


class _Master:
    __slots__ = ("held", "id", "outbox", "sink", "tasks")

    def __init__(self, mid: int, sink: Callable[[list[Result]], None] | None) -> None:
        self.id = mid
        self.sink = sink  # in-process masters get results pushed, on the loop
        self.outbox: list[Result] = []
        self.held: _Held | None = None
        self.tasks: set[int] = set()


class TaskService:
    """The task service.  See the module docstring; one lives on a server's loop."""

    __distproc_loop_methods__ = frozenset(
        ("hello_worker", "exchange", "heartbeat", "give_back", "goodbye",
         "hello_master", "submit", "results", "cancel", "status")
    )  # fmt: skip
    __distproc_defer__ = ("submit",)

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_attempts: int = 3,
        heartbeat_timeout: float = 10.0,
        address: str = "",
    ) -> None:
        check_options(max_attempts, heartbeat_timeout)
        self.loop = loop
        self.max_attempts = max_attempts
        self.heartbeat_timeout = heartbeat_timeout
        self.address = address
        self.started = time.monotonic()
        self.tasks: dict[int, _Task] = {}
        self.ready: deque[int] = deque()
        self.workers: dict[str, _Worker] = {}
        self.masters: dict[int, _Master] = {}
        self.dead_letters: deque[dict[str, Any]] = deque(maxlen=DEAD_LETTERS_KEPT)
        self.counts = {"done": 0, "failed": 0, "dead": 0, "cancelled": 0, "discarded": 0}
        self._finished: deque[list[float]] = deque()  # [second, count] for the last minute
        self._worker_ids = itertools.count(1)
        self._master_ids = itertools.count(1)
        self._flush_scheduled: set[int] = set()
        #: Functions that no connected worker can import -> the payload of their
        #: tasks' results; and the timers that will put a function there.
        self.unavailable: dict[str, dict[str, Any]] = {}
        self._give_up_timers: dict[str, asyncio.TimerHandle] = {}
        #: Set while the host shuts down: workers that go then are not news.
        self.closing = False
        self._check = loop.call_later(self._check_interval(), self._check_heartbeats)

    # ------------------------------------------------------------ workers
    def hello_worker(self, call: Any, info: dict[str, Any]) -> None:
        """A worker joins: ``info`` has ``host``, ``pid`` and ``slots``."""
        wid = f"w{next(self._worker_ids)}"
        worker = self.workers[wid] = _Worker(wid, info if isinstance(info, dict) else {})
        call.connection.close_callbacks.append(lambda: self.lose_worker(wid, "connection lost"))
        log.info("worker %s joined with %d slot(s)", worker.label, worker.slots)
        call.reply({"worker": wid, "heartbeat": self.heartbeat_timeout / 4})
        # A newcomer may import what the others cannot.
        self._check_unavailable(set(self.unavailable) | set(self._give_up_timers))

    def exchange(
        self, call: Any, wid: str, results: list[Any], want: int, wait: float = 0.0
    ) -> None:
        """Take a worker's finished results; answer with up to ``want`` new tasks.

        With no task to give and ``wait`` > 0 the call is held until there is
        one or ``wait`` passes.  ``None`` means "unknown worker": its leases
        were lost (heartbeats missed); it must say hello again.
        """
        worker = self.workers.get(wid)
        if worker is None:
            if results:
                self.counts["discarded"] += len(results)
                log.info("discarded %d late result(s) from lost worker %s", len(results), wid)
            call.reply(None)
            return
        worker.last_seen = time.monotonic()
        refused: list[_Task] = []
        for tid, attempt, status, payload in results:
            task = self._finish(worker, tid, attempt, status, payload)
            if task is not None:
                refused.append(task)
        if refused:
            self._refused(worker, refused)
        if worker.waiter is not None:
            worker.waiter.answer([])
            worker.waiter = None
        if want <= 0 or worker.leaving:
            call.reply([])
            return
        tasks = self._lease(worker, want)
        if tasks or wait <= 0 or worker.leases:
            # A worker that still holds leases has tasks in its buffer (another of
            # its threads refilled it) or results on the way: it must not wait here.
            call.reply(tasks)
            return
        held = worker.waiter = _Held(call, want)
        held.timer = self.loop.call_later(wait, self._wait_over, worker, held)
        call.on_cancel(lambda: self._wait_over(worker, held))
        self._steal_for(worker)

    def _wait_over(self, worker: _Worker, held: _Held) -> None:
        if worker.waiter is held:
            worker.waiter = None
            held.answer([])

    def heartbeat(self, call: Any, wid: str, hold: float = 0.0) -> None:
        """A worker is alive; held up to ``hold`` s unless the service wants tasks back."""
        worker = self.workers.get(wid)
        if worker is None:
            call.reply(None)
            return
        worker.last_seen = time.monotonic()
        if worker.hb is not None:
            worker.hb.answer({})
        if worker.give_back > 0 or hold <= 0:
            call.reply(self._news(worker))
            return
        held = worker.hb = _Held(call)
        held.timer = self.loop.call_later(min(hold, self.heartbeat_timeout / 2), self._hb_over,
                                          worker, held)  # fmt: skip
        call.on_cancel(lambda: self._hb_over(worker, held))

    def _hb_over(self, worker: _Worker, held: _Held) -> None:
        if worker.hb is held:
            worker.hb = None
            held.answer(self._news(worker))

    def _news(self, worker: _Worker) -> dict[str, Any]:
        news: dict[str, Any] = {}
        if worker.give_back > 0:
            news["give_back"] = worker.give_back
            worker.give_back = 0
        return news

    def give_back(self, call: Any, wid: str, tids: list[int]) -> None:
        """A worker returns leased tasks it has not started; they are queued again first."""
        worker = self.workers.get(wid)
        if worker is not None:
            self._return(worker, tids)
        call.reply(None)

    def goodbye(self, call: Any, wid: str, tids: list[int]) -> None:
        """A worker is stopping: it returns unstarted tasks and takes no new ones."""
        worker = self.workers.get(wid)
        if worker is not None:
            worker.leaving = True
            self._return(worker, tids)
            log.info("worker %s is leaving; %d task(s) returned", worker.label, len(tids))
            # Its held calls would keep it waiting up to their deadlines: answer them now.
            if worker.waiter is not None:
                held, worker.waiter = worker.waiter, None
                held.answer([])
            if worker.hb is not None:
                held, worker.hb = worker.hb, None
                held.answer(self._news(worker))
            self._check_unavailable(self._quarantined_anywhere())
        call.reply(None)

    def _return(self, worker: _Worker, tids: list[int]) -> None:
        for tid in reversed(tids):
            task = self.tasks.get(tid)
            if task is not None and task.state == _LEASED and task.worker == worker.id:
                del worker.leases[tid]
                task.state = _QUEUED
                task.worker = ""
                self.ready.appendleft(tid)
        self._wake()

    def lose_worker(self, wid: str, how: str) -> None:
        """A worker is gone (``how``): its leased tasks go back to the queue, or die."""
        worker = self.workers.pop(wid, None)
        if worker is None:
            return
        for held in (worker.waiter, worker.hb):
            if held is not None and held.timer is not None:
                held.timer.cancel()
        lost = list(worker.leases)
        if (worker.leaving and not lost) or self.closing:
            log.info("worker %s left", worker.label)
        else:
            log.warning("worker %s lost (%s) holding %d task(s)", worker.label, how, len(lost))
        # One lease: that task was running when the worker went (the worker
        # reports results before it leases again).  Several: any one of them
        # may be the culprit, so each becomes a suspect and runs alone.
        certain = len(lost) == 1
        for tid in reversed(lost):
            task = self.tasks.get(tid)
            if task is None or task.state != _LEASED:
                continue
            task.history.append((worker.label, how))
            task.worker = ""
            if certain:
                task.strikes += 1
            task.suspect = True
            if task.strikes >= min(self.max_attempts, task.max_attempts or self.max_attempts):
                self._dead_letter(task)
            else:
                task.state = _QUEUED
                self.ready.appendleft(tid)
        self._check_unavailable(self._quarantined_anywhere())
        self._wake()

    def _dead_letter(self, task: _Task) -> None:
        reason = f"took down {task.strikes} worker(s): " + "; ".join(
            f"{label}: {how}" for label, how in task.history
        )
        attempts = [list(h) for h in task.history]
        if task.opts.get("split"):  # a map chunk: its master runs its calls one by one
            log.info("task %d (a map chunk) lost its worker; its master splits it", task.id)
            self._complete(task, LOST, {"reason": reason, "attempts": attempts})
            return
        log.error("task %d (%s) dead-lettered: %s", task.id, task.fn, reason)
        self.dead_letters.append(
            {"task": task.id, "function": task.fn, "reason": reason, "attempts": attempts,
             "at": time.time()}
        )  # fmt: skip
        self.counts["dead"] += 1
        self._complete(task, LOST, {"reason": reason, "attempts": attempts})

    def _check_interval(self) -> float:
        return max(0.05, self.heartbeat_timeout / 4)

    def _check_heartbeats(self) -> None:
        now = time.monotonic()
        for wid, worker in list(self.workers.items()):
            if now - worker.last_seen > self.heartbeat_timeout:
                self.lose_worker(wid, f"no heartbeat for {self.heartbeat_timeout:g} s")
        self._check = self.loop.call_later(self._check_interval(), self._check_heartbeats)

    # ----------------------------------------------------------- leasing
    def _lease(self, worker: _Worker, want: int) -> list[list[Any]]:
        ready = self.ready
        if not ready:
            return []
        if worker.leases and (self._holds_suspect(worker) or self._head_suspect()):
            return []  # a suspect runs alone: on a worker that holds nothing else
        active = sum(1 for w in self.workers.values() if not w.leaving) or 1
        # A fair share when several workers compete, so no one hoards the queue.
        n = min(want, max(worker.slots, -(-len(ready) // active)))
        out: list[list[Any]] = []
        tasks = self.tasks
        now = time.monotonic()
        leases = worker.leases
        quarantined = worker.quarantined
        skipped: list[int] = []  # tasks of functions this worker cannot import
        size = 0
        while ready and len(out) < n and size < BATCH_BYTES:
            tid = ready.popleft()
            task = tasks.get(tid)
            if task is None or task.state != _QUEUED:
                continue  # cancelled while queued
            if quarantined and task.fn in quarantined:
                skipped.append(tid)
                if len(skipped) >= QUARANTINE_SCAN:
                    break
                continue
            if task.suspect and out:
                ready.appendleft(tid)
                break
            task.state = _LEASED
            task.attempt += 1
            task.worker = worker.id
            leases[tid] = now
            out.append([tid, task.attempt, task.fn, task.payload, task.opts])
            size += len(task.payload)
            if task.suspect:
                break
        ready.extendleft(reversed(skipped))
        return out

    def _holds_suspect(self, worker: _Worker) -> bool:
        task = self.tasks.get(next(iter(worker.leases)))
        return task is not None and task.suspect

    def _head_suspect(self) -> bool:
        for tid in self.ready:
            task = self.tasks.get(tid)
            if task is not None and task.state == _QUEUED:
                return task.suspect
        return False

    def _wake(self) -> None:
        """Hand queued tasks to workers that wait for them."""
        if not self.ready:
            return
        for worker in list(self.workers.values()):
            held = worker.waiter
            if held is None:
                continue
            tasks = self._lease(worker, held.want)
            if tasks:
                worker.waiter = None
                held.answer(tasks)
            if not self.ready:
                break

    def _steal_for(self, idle: _Worker) -> None:
        """``idle`` waits for tasks and none are queued: ask hoarders to give some back."""
        if self.ready:
            return
        for worker in self.workers.values():
            extra = len(worker.leases) - worker.slots
            if worker is idle or extra <= 0 or worker.give_back:
                continue
            if idle.quarantined and not self._could_take(idle, worker):
                continue
            worker.give_back = (extra + 1) // 2
            if worker.hb is not None:
                held, worker.hb = worker.hb, None
                held.answer(self._news(worker))

    def _could_take(self, idle: _Worker, hoarder: _Worker) -> bool:
        """Whether ``hoarder`` holds a task of a function that ``idle`` can import."""
        for tid in hoarder.leases:
            task = self.tasks.get(tid)
            if task is not None and task.fn not in idle.quarantined:
                return True
        return False

    # ------------------------------------------------------- quarantine
    def _refused(self, worker: _Worker, tasks: list[_Task]) -> None:
        """``worker`` cannot import these tasks' functions: requeue them first, no strike."""
        for task in reversed(tasks):
            task.state = _QUEUED
            task.worker = ""
            self.ready.appendleft(task.id)
        self._check_unavailable({task.fn for task in tasks})
        self._wake()

    def _quarantined_anywhere(self) -> set[str]:
        return {fn for w in self.workers.values() for fn in w.quarantined}

    def _nobody_can_import(self, fn: str) -> list[_Worker] | None:
        """The connected workers, if there are some and every one has quarantined ``fn``."""
        active = [w for w in self.workers.values() if not w.leaving]
        if active and all(fn in w.quarantined for w in active):
            return active
        return None

    def _check_unavailable(self, fns: set[str]) -> None:
        """For each of ``fns``: start (or stop) the countdown to failing its tasks."""
        if self.closing:
            return
        for fn in fns:
            if self._nobody_can_import(fn) is None:
                self.unavailable.pop(fn, None)
                timer = self._give_up_timers.pop(fn, None)
                if timer is not None:
                    timer.cancel()
            elif fn in self.unavailable:
                self._fail_unavailable(fn)  # tasks that came back or came in since
            elif fn not in self._give_up_timers:
                self._give_up_timers[fn] = self.loop.call_later(
                    UNAVAILABLE_GRACE, self._give_up, fn
                )

    def _give_up(self, fn: str) -> None:
        self._give_up_timers.pop(fn, None)
        workers = self._nobody_can_import(fn)
        if workers is None:
            return
        said = [[w.label, w.quarantined[fn]] for w in workers]
        reason = f"no connected worker can import {fn}: " + "; ".join(
            f"{label}: {error}" for label, error in said
        )
        self.unavailable[fn] = {"reason": reason, "workers": said}
        log.error("%s; failing its tasks", reason)
        self._fail_unavailable(fn)

    def _fail_unavailable(self, fn: str) -> None:
        payload = self.unavailable[fn]
        doomed = [t for t in self.tasks.values() if t.fn == fn and t.state != _LEASED]
        for task in doomed:
            self._complete(task, UNAVAILABLE, payload)

    # ---------------------------------------------------------- results
    def _finish(
        self, worker: _Worker, tid: int, attempt: int, status: str, payload: Any
    ) -> _Task | None:
        """Record one result; return the task if the worker cannot import its function."""
        task = self.tasks.get(tid)
        if (
            task is None
            or task.state != _LEASED
            or task.worker != worker.id
            or task.attempt != attempt
            or worker.leases.pop(tid, None) is None
        ):
            self.counts["discarded"] += 1
            log.info("discarded a late result for task %d from %s", tid, worker.label)
            return None
        if status == UNAVAILABLE:
            if task.fn not in worker.quarantined:
                said = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
                worker.quarantined[task.fn] = error = str(said)[:2000]
                log.warning("worker %s cannot import %s (%s); it gets none of its tasks again",
                            worker.label, task.fn, error)  # fmt: skip
            return task
        worker.done += 1
        if status == RETRY:
            retries = int(task.opts.get("retries", 0))
            if task.retries < retries:
                task.retries += 1
                task.state = _DELAYED
                task.worker = ""
                delay = float(task.opts.get("backoff", 0.5)) * 2 ** (task.retries - 1)
                self.loop.call_later(delay, self._requeue, tid)
                return None
            status = ERROR
        elif status not in _FINAL:
            status = ERROR
        self._complete(task, status, payload)
        return None

    def _requeue(self, tid: int) -> None:
        task = self.tasks.get(tid)
        if task is not None and task.state == _DELAYED:
            task.state = _QUEUED
            self.ready.append(tid)
            if task.fn in self.unavailable:
                self._fail_unavailable(task.fn)
            self._wake()

    def _complete(self, task: _Task, status: str, payload: Any) -> None:
        del self.tasks[task.id]
        if status == OK:
            self.counts["done"] += 1
        elif status != LOST:
            self.counts["failed"] += 1
        second = time.monotonic() // 1
        finished = self._finished
        if finished and finished[-1][0] == second:
            finished[-1][1] += 1
        else:
            finished.append([second, 1])
            while finished and finished[0][0] < second - 60:
                finished.popleft()
        master = self.masters.get(task.master)
        if master is None:
            return  # its master is gone
        master.tasks.discard(task.id)
        master.outbox.append([task.id, status, payload])
        if master.sink is not None:
            if master.id not in self._flush_scheduled:
                self._flush_scheduled.add(master.id)
                self.loop.call_soon(self._flush, master)
        elif master.held is not None:
            held, master.held = master.held, None
            held.answer(self._take_results(master, held.want))

    def _flush(self, master: _Master) -> None:
        self._flush_scheduled.discard(master.id)
        out, master.outbox = master.outbox, []
        if out and master.sink is not None:
            try:
                master.sink(out)
            except Exception:
                log.exception("a master's result sink failed")

    # ----------------------------------------------------------- masters
    def add_master(self, sink: Callable[[list[Result]], None] | None = None) -> tuple[int, int]:
        """Register a master; return its id and the first task id it may use."""
        mid = next(self._master_ids)
        self.masters[mid] = _Master(mid, sink)
        return mid, mid << ID_BITS

    def drop_master(self, mid: int) -> None:
        """A master is gone: its queued tasks are cancelled; results of running ones dropped."""
        master = self.masters.pop(mid, None)
        if master is None:
            return
        if master.held is not None and master.held.timer is not None:
            master.held.timer.cancel()
        for tid in master.tasks:
            task = self.tasks.get(tid)
            if task is not None and task.state != _LEASED:
                del self.tasks[tid]
                self.counts["cancelled"] += 1
        log.info("master %d left; %d of its task(s) were unfinished", mid, len(master.tasks))

    def add_tasks(self, mid: int, tasks: list[Any]) -> None:
        """Queue ``(tid, fn, payload, opts)`` tasks of master ``mid``."""
        master = self.masters.get(mid)
        if master is None:
            raise KeyError(f"unknown master {mid!r}")
        low, high = mid << ID_BITS, (mid + 1) << ID_BITS
        table = self.tasks
        ready = self.ready
        front: list[int] = []
        fns: set[str] = set()
        for tid, fn, payload, opts in tasks:
            if not (low <= tid < high) or tid in table:
                raise ValueError(f"task id {tid!r} is not free for master {mid}")
            task = table[tid] = _Task(tid, mid, fn, payload, opts)
            master.tasks.add(tid)
            fns.add(fn)
            if task.opts.get("front"):
                front.append(tid)
            else:
                ready.append(tid)
        ready.extendleft(reversed(front))
        for fn in fns & self.unavailable.keys():
            self._fail_unavailable(fn)
        self._wake()

    def cancel_tasks(self, mid: int, tids: list[int]) -> list[int]:
        """Cancel tasks of master ``mid`` that have not started; return those cancelled."""
        out = []
        master = self.masters.get(mid)
        for tid in tids:
            task = self.tasks.get(tid)
            if task is not None and task.master == mid and task.state != _LEASED:
                del self.tasks[tid]
                self.counts["cancelled"] += 1
                if master is not None:
                    master.tasks.discard(tid)
                out.append(tid)
        return out

    def hello_master(self, call: Any) -> None:
        """A remote master joins; its queued tasks are cancelled when its connection drops."""
        mid, base = self.add_master()
        call.connection.close_callbacks.append(lambda: self.drop_master(mid))
        call.reply({"master": mid, "base": base})

    def submit(self, call: Any, mid: int, tasks: list[Any]) -> None:
        try:
            self.add_tasks(mid, tasks)
        except Exception as exc:
            call.fail(exc)
        else:
            call.reply(None)

    def results(self, call: Any, mid: int, max_items: int, wait: float = 0.0) -> None:
        """Up to ``max_items`` results of master ``mid``; held up to ``wait`` s for one."""
        master = self.masters.get(mid)
        if master is None:
            call.fail(KeyError(f"unknown master {mid!r}"))
            return
        if master.held is not None:
            master.held.answer([])
            master.held = None
        if master.outbox or wait <= 0:
            call.reply(self._take_results(master, max_items))
            return
        held = master.held = _Held(call, max_items)

        def over() -> None:
            if master.held is held:
                master.held = None
                held.answer([])

        held.timer = self.loop.call_later(wait, over)
        call.on_cancel(over)

    @staticmethod
    def _take_results(master: _Master, want: int) -> list[Result]:
        """Up to ``want`` results of ``master``'s outbox, in one reply of a bounded size."""
        runs = split_by_size(master.outbox[:want], lambda r: _size(r[2]))
        out = runs[0] if runs else []
        del master.outbox[: len(out)]
        return out

    def cancel(self, call: Any, mid: int, tids: list[int]) -> None:
        call.reply(self.cancel_tasks(mid, tids))

    # ------------------------------------------------------------ status
    def status(self, call: Any) -> None:
        call.reply(self.__distproc_status__())

    def __distproc_status__(self) -> dict[str, Any]:
        now = time.monotonic()
        leased = sum(len(w.leases) for w in self.workers.values())
        second = now // 1
        recent = sum(count for sec, count in self._finished if sec >= second - 60)
        window = min(60.0, max(1.0, now - self.started))
        return {
            "kind": "tasks",
            "address": self.address,
            "pid": os.getpid(),
            "uptime": now - self.started,
            "tasks": {
                "queued": len(self.tasks) - leased,
                "leased": leased,
                "done": self.counts["done"],
                "failed": self.counts["failed"],
                "dead": self.counts["dead"],
                "cancelled": self.counts["cancelled"],
                "discarded": self.counts["discarded"],
            },
            "throughput_1m": recent / window,
            "masters": len(self.masters),
            "workers": [
                {
                    "id": w.id,
                    "host": w.host,
                    "pid": w.pid,
                    "slots": w.slots,
                    "done": w.done,
                    "leased": len(w.leases),
                    "oldest_running": (now - next(iter(w.leases.values()))) if w.leases else None,
                    "connected_for": now - w.since,
                    "leaving": w.leaving,
                    "quarantined": [
                        {"function": fn, "error": error} for fn, error in w.quarantined.items()
                    ],
                }
                for w in self.workers.values()
            ],
            "dead_letters": list(self.dead_letters),
        }

    def close(self) -> None:
        """Stop the heartbeat checks and countdowns (the server is stopping)."""
        self._check.cancel()
        for timer in self._give_up_timers.values():
            timer.cancel()
        self._give_up_timers.clear()
