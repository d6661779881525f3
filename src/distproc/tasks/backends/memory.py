"""The memory backend: every task in the service's process, gone when it exits.

Every task is always in exactly one state: *queued*, *leased* to one worker,
*delayed* (a retry waiting for its ``available_at``), or finished (*done*,
*failed*, *dead-lettered* or *cancelled*, at which point its outcome waits
for its master and the task itself is forgotten).  The service calls these
methods on its event loop, one at a time, so each is one atomic step.

A lease ends in one of three ways:

* the worker reports the task's result: it is accepted only while that exact
  lease (task, attempt, worker) is current, so a late result from a lost
  lease is discarded and every task completes once;
* the worker is lost (its connection dropped, or it was silent for
  ``heartbeat_timeout``): every task it held goes back to the front of the
  queue, with a strike or as a suspect (:mod:`..policy`), and the loss is
  written in the task's history;
* the worker gives unstarted tasks back (work stealing, a graceful stop), or
  says it cannot import the task's function (quarantine, :mod:`..policy`).

Masters place tasks at the back of the queue, or with the ``front`` option
at its front (the calls of a ``map`` chunk whose worker was lost).  Payloads
are opaque bytes: the backend never decodes what masters and workers send
each other.

The ``_saw_*`` hooks are where a durable subclass (:mod:`.sqlite`) learns
what changed; here they do nothing.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any, ClassVar

from .. import policy
from ..records import (
    BATCH_BYTES,
    ERROR,
    FINAL,
    ID_BITS,
    LOST,
    OK,
    RETRY,
    UNAVAILABLE,
    DeadLetter,
    Lease,
    Outcome,
    Report,
    TaskSpec,
    WorkerHello,
    split_by_size,
)
from .base import Capabilities, Durations, Joined, TaskBackend

__all__ = [
    "DEAD_LETTERS_KEPT",
    "MasterState",
    "MemoryBackend",
    "TaskState",
    "WorkerState",
]  # fmt: skip

log = logging.getLogger("distproc.tasks")

QUEUED, LEASED, DELAYED = range(3)
#: How many dead letters are kept for inspection and requeueing.
DEAD_LETTERS_KEPT = 1000
#: Workers that went, kept with how they ended for ``status()``.
GONE_KEPT = 50
#: The master of requeued dead letters: their outcomes go to nobody.
NO_MASTER = 0


class TaskState:
    """One unfinished task."""

    __slots__ = ("attempt", "available_at", "fn", "history", "id", "master", "options",
                 "payload", "pos", "retries", "state", "strikes", "suspect", "worker")  # fmt: skip

    def __init__(self, spec: TaskSpec, master: int) -> None:
        self.id = spec.id
        self.master = master
        self.fn = spec.fn
        self.payload = spec.payload
        self.options = spec.options
        self.attempt = 0
        self.state = QUEUED
        self.worker = ""
        self.history: list[tuple[str, str]] = list(spec.options.history)
        self.retries = 0
        #: Lost workers that certainly ran this task (it was their only lease);
        #: a master may start a task with some (the rest of a lost ``map`` chunk).
        self.strikes = spec.options.strikes
        #: Held by a worker that was lost with other leases too: it may be the
        #: task that took the worker down, so it runs alone until it finishes.
        self.suspect = False
        #: Its place in the queue (smaller runs first).
        self.pos = 0
        #: When a delayed retry may run (``time.monotonic()``).
        self.available_at = 0.0

    def spec(self) -> TaskSpec:
        return TaskSpec(self.id, self.fn, self.payload, self.options)


class WorkerState:
    """One worker slot that joined."""

    __slots__ = ("absent", "done", "give_back", "host", "id", "label", "last_seen", "leases",
                 "leaving", "pid", "quarantined", "since", "slots")  # fmt: skip

    def __init__(self, wid: str, hello: WorkerHello, now: float) -> None:
        self.id = wid
        self.host = hello.host
        self.pid = hello.pid
        self.slots = hello.slots
        self.label = f"{wid} ({self.host} pid {self.pid})"
        self.leases: dict[int, float] = {}  # task id -> leased at, oldest first
        self.done = 0
        self.last_seen = self.since = now
        self.leaving = False
        self.give_back = 0
        #: Known from a store, not back since the service started: if it does not
        #: come back, its leases return without a strike (the service died, not it).
        self.absent = False
        #: Functions this worker cannot import -> what it said.
        self.quarantined: dict[str, str] = dict(hello.quarantined)


class MasterState:
    """One master: its unfinished tasks and the outcomes it has not confirmed."""

    __slots__ = ("expires_at", "grace", "high_water", "id", "next_seq", "outbox", "tasks")

    def __init__(self, mid: int, grace: float) -> None:
        self.id = mid
        self.grace = grace
        #: While its connection is gone: when it is dropped (``time.monotonic()``).
        self.expires_at: float | None = None
        #: The highest task id queued: a batch sent again is not queued twice.
        self.high_water = mid << ID_BITS
        self.next_seq = 1
        self.outbox: deque[Outcome] = deque()
        self.tasks: set[int] = set()


class MemoryBackend(TaskBackend):
    """Task state in this process: see the module docstring."""

    name: ClassVar[str] = "memory"
    capabilities: ClassVar[Capabilities] = Capabilities(
        durable=False, instant_requeue=True, via_service=True, multi_host=False,
        group_commit=False,
    )  # fmt: skip

    def __init__(self, *, max_attempts: int = 3, heartbeat_timeout: float = 10.0) -> None:
        super().__init__(max_attempts=max_attempts, heartbeat_timeout=heartbeat_timeout)
        self.store_id = os.urandom(8).hex()
        self._reset()

    def _reset(self) -> None:
        self.tasks: dict[int, TaskState] = {}
        self.ready: deque[int] = deque()
        self.delayed: list[tuple[float, int]] = []  # a heap of (available_at, task id)
        self.workers: dict[str, WorkerState] = {}
        self.masters: dict[int, MasterState] = {}
        self.dead: OrderedDict[int, DeadLetter] = OrderedDict()
        self.counts = {"done": 0, "failed": 0, "dead": 0, "cancelled": 0, "discarded": 0,
                       "lease_expired": 0}  # fmt: skip
        self.durations = Durations()
        #: The last workers that went, with how each ended (the dashboard shows them).
        self.gone: deque[dict[str, Any]] = deque(maxlen=GONE_KEPT)
        self.next_worker = 1
        self.next_master = 1
        self._head = self._tail = 0  # the smallest and largest queue positions given
        self._finished: deque[list[float]] = deque()  # [second, count] for the last minute
        #: Functions that no connected worker can import -> the payload of their
        #: tasks' outcomes; and when a function goes there.
        self.unavailable: dict[str, dict[str, Any]] = {}
        self.give_up_at: dict[str, float] = {}
        self._next_check = time.monotonic()

    # ------------------------------------------------------- hooks (durability)
    def _saw_task(self, task: TaskState) -> None:
        """``task`` was created or changed."""

    def _saw_task_end(self, tid: int) -> None:
        """Task ``tid`` finished (or was cancelled)."""

    def _saw_worker(self, worker: WorkerState) -> None: ...

    def _saw_worker_end(self, wid: str) -> None: ...

    def _saw_master(self, master: MasterState) -> None: ...

    def _saw_master_end(self, mid: int) -> None: ...

    def _saw_outcome(self, mid: int, outcome: Outcome) -> None: ...

    def _saw_confirmed(self, mid: int, upto: int) -> None: ...

    def _saw_dead_letter(self, letter: DeadLetter) -> None: ...

    def _saw_dead_letter_end(self, tid: int) -> None: ...

    def commit(self) -> None:
        """Nothing to store: the state lives and dies with this process."""

    def reload(self) -> None:
        """Nothing was stored: the state in memory is the state."""

    def close(self) -> None:
        """Nothing to release."""

    # ----------------------------------------------------------- the queue
    def _push_back(self, task: TaskState) -> None:
        task.state = QUEUED
        task.worker = ""
        self._tail += 1
        task.pos = self._tail
        self.ready.append(task.id)
        self.notices.ready = True
        self._saw_task(task)

    def _push_front(self, tasks: list[TaskState]) -> None:
        """Queue ``tasks`` first, in this order."""
        for task in reversed(tasks):
            task.state = QUEUED
            task.worker = ""
            self._head -= 1
            task.pos = self._head
            self.ready.appendleft(task.id)
            self._saw_task(task)
        if tasks:
            self.notices.ready = True

    # ------------------------------------------------------------- workers
    def add_worker(self, hello: WorkerHello) -> Joined:
        now = time.monotonic()
        reason = ""
        if hello.resume is not None:
            store, wid = hello.resume
            worker = self.workers.get(wid) if store == self.store_id else None
            if worker is not None:
                self._resume_worker(worker, hello, now)
                return Joined(wid, True)
            reason = ("the service has a new store" if store != self.store_id
                      else f"{wid} was lost meanwhile")  # fmt: skip
        wid = f"w{self.next_worker}"
        self.next_worker += 1
        worker = self.workers[wid] = WorkerState(wid, hello, now)
        self._saw_worker(worker)
        log.info("worker %s joined with %d slot(s)", worker.label, worker.slots)
        # A newcomer may import what the others cannot.
        self._check_unavailable(set(self.unavailable) | set(self.give_up_at))
        return Joined(wid, False, reason)

    def _resume_worker(self, worker: WorkerState, hello: WorkerHello, now: float) -> None:
        worker.absent = False
        worker.last_seen = now
        worker.pid, worker.host = hello.pid, hello.host
        worker.label = f"{worker.id} ({worker.host} pid {worker.pid})"
        worker.quarantined.update(hello.quarantined)
        holding = set(hello.holding)
        # Leases whose reply never reached the worker: back to the queue, no strike.
        lost = [tid for tid in worker.leases if tid not in holding]
        self._return(worker, lost)
        self._saw_worker(worker)
        log.info("worker %s is back with %d lease(s)", worker.label, len(worker.leases))

    def knows_worker(self, wid: str) -> bool:
        return wid in self.workers

    def touch_worker(self, wid: str) -> None:
        worker = self.workers.get(wid)
        if worker is not None:
            worker.last_seen = time.monotonic()

    def holds_leases(self, wid: str) -> bool:
        worker = self.workers.get(wid)
        return worker is not None and bool(worker.leases)

    def is_leaving(self, wid: str) -> bool:
        worker = self.workers.get(wid)
        return worker is None or worker.leaving

    def worker_count(self) -> int:
        return len(self.workers)

    def report(self, wid: str, reports: list[Report]) -> None:
        worker = self.workers.get(wid)
        if worker is None:
            if reports:
                self.counts["discarded"] += len(reports)
                log.info("discarded %d late result(s) from lost worker %s", len(reports), wid)
            return
        refused: list[TaskState] = []
        for report in reports:
            task = self._finish(worker, report)
            if task is not None:
                refused.append(task)
        if refused:
            self._refused(refused)
        if reports:
            self._saw_worker(worker)

    def give_back(self, wid: str, tids: list[int]) -> None:
        worker = self.workers.get(wid)
        if worker is not None:
            self._return(worker, tids)

    def leave(self, wid: str, tids: list[int]) -> None:
        worker = self.workers.get(wid)
        if worker is None:
            return
        worker.leaving = True
        self._return(worker, tids)
        self._saw_worker(worker)
        log.info("worker %s is leaving; %d task(s) returned", worker.label, len(tids))
        self._check_unavailable(self._quarantined_anywhere())

    def _return(self, worker: WorkerState, tids: list[int]) -> None:
        back = []
        for tid in tids:
            task = self.tasks.get(tid)
            if task is not None and task.state == LEASED and task.worker == worker.id:
                del worker.leases[tid]
                back.append(task)
        self._push_front(back)

    def lose_worker(self, wid: str, how: str) -> None:
        worker = self.workers.pop(wid, None)
        if worker is None:
            return
        self._saw_worker_end(wid)
        lost = list(worker.leases)
        ended = how
        if (worker.leaving and not lost) or self.closing:
            log.info("worker %s left", worker.label)
            ended = "left"
        else:
            log.warning("worker %s lost (%s) holding %d task(s)", worker.label, how, len(lost))
        self.gone.append({"id": wid, "host": worker.host, "pid": worker.pid,
                          "slots": worker.slots, "done": worker.done, "ended": ended,
                          "at": time.time()})  # fmt: skip
        strike = 0 if worker.absent else policy.strikes_for(len(lost))
        back: list[TaskState] = []
        for tid in lost:
            task = self.tasks.get(tid)
            if task is None or task.state != LEASED:
                continue
            task.worker = ""
            if worker.absent:  # the service restarted: nothing says the task did it
                back.append(task)
                continue
            task.history.append((worker.label, how))
            task.strikes += strike
            task.suspect = True
            if policy.is_dead(task.strikes, task.options.max_attempts, self.max_attempts):
                self._dead_letter(task)
            else:
                back.append(task)
        self._push_front(back)
        self._check_unavailable(self._quarantined_anywhere())

    def ask_give_back(self, idle: str) -> None:
        waiting = self.workers.get(idle)
        if self.ready or waiting is None:
            return
        for worker in self.workers.values():
            count = policy.give_back_count(len(worker.leases), worker.slots)
            if worker is waiting or not count or worker.give_back:
                continue
            if waiting.quarantined and not self._could_take(waiting, worker):
                continue
            worker.give_back = count
            self.notices.give_back.add(worker.id)

    def take_give_back(self, wid: str) -> int:
        worker = self.workers.get(wid)
        if worker is None:
            return 0
        count, worker.give_back = worker.give_back, 0
        return count

    def _could_take(self, idle: WorkerState, hoarder: WorkerState) -> bool:
        """Whether ``hoarder`` holds a task of a function that ``idle`` can import."""
        for tid in hoarder.leases:
            task = self.tasks.get(tid)
            if task is not None and task.fn not in idle.quarantined:
                return True
        return False

    # ------------------------------------------------------------- leasing
    def lease(self, wid: str, want: int) -> list[Lease]:
        worker = self.workers.get(wid)
        ready = self.ready
        if worker is None or worker.leaving or want <= 0 or not ready:
            return []
        if not policy.may_lease(bool(worker.leases), self._holds_suspect(worker),
                                self._head_suspect()):  # fmt: skip
            return []
        active = sum(1 for w in self.workers.values() if not w.leaving)
        n = policy.fair_share(want, worker.slots, len(ready), active)
        out: list[Lease] = []
        tasks = self.tasks
        now = time.monotonic()
        leases = worker.leases
        quarantined = worker.quarantined
        skipped: list[int] = []  # tasks of functions this worker cannot import
        leased = self.notices.leased
        size = 0
        while ready and len(out) < n and size < BATCH_BYTES:
            tid = ready.popleft()
            task = tasks.get(tid)
            if task is None or task.state != QUEUED:
                continue  # cancelled while queued
            if quarantined and task.fn in quarantined:
                skipped.append(tid)
                if len(skipped) >= policy.QUARANTINE_SCAN:
                    break
                continue
            if policy.ends_batch(task.suspect, len(out)):
                ready.appendleft(tid)
                break
            task.state = LEASED
            task.attempt += 1
            task.worker = worker.id
            leases[tid] = now
            self._saw_task(task)
            out.append(Lease(tid, task.attempt, task.fn, task.payload, task.options))
            leased.setdefault(task.master, []).append(tid)
            size += len(task.payload)
            if task.suspect:
                break
        ready.extendleft(reversed(skipped))
        return out

    def _holds_suspect(self, worker: WorkerState) -> bool:
        if not worker.leases:
            return False
        task = self.tasks.get(next(iter(worker.leases)))
        return task is not None and task.suspect

    def _head_suspect(self) -> bool:
        for tid in self.ready:
            task = self.tasks.get(tid)
            if task is not None and task.state == QUEUED:
                return task.suspect
        return False

    # ---------------------------------------------------------- quarantine
    def _refused(self, tasks: list[TaskState]) -> None:
        """A worker cannot import these tasks' functions: requeue them first, no strike."""
        self._push_front(tasks)
        self._check_unavailable({task.fn for task in tasks})

    def _quarantined_anywhere(self) -> set[str]:
        return {fn for w in self.workers.values() for fn in w.quarantined}

    def _active(self) -> list[WorkerState]:
        return [w for w in self.workers.values() if not w.leaving]

    def _check_unavailable(self, fns: set[str]) -> None:
        """For each of ``fns``: start (or stop) the countdown to failing its tasks."""
        if self.closing:
            return
        for fn in fns:
            if not policy.nobody_can_import(fn, (w.quarantined for w in self._active())):
                self.unavailable.pop(fn, None)
                self.give_up_at.pop(fn, None)
            elif fn in self.unavailable:
                self._fail_unavailable(fn)  # tasks that came back or came in since
            elif fn not in self.give_up_at:
                self.give_up_at[fn] = time.monotonic() + policy.UNAVAILABLE_GRACE

    def _give_up(self, fn: str) -> None:
        self.give_up_at.pop(fn, None)
        active = self._active()
        if not policy.nobody_can_import(fn, (w.quarantined for w in active)):
            return
        payload = policy.unavailable_payload(fn, [[w.label, w.quarantined[fn]] for w in active])
        self.unavailable[fn] = payload
        log.error("%s; failing its tasks", payload["reason"])
        self._fail_unavailable(fn)

    def _fail_unavailable(self, fn: str) -> None:
        payload = self.unavailable[fn]
        doomed = [t for t in self.tasks.values() if t.fn == fn and t.state != LEASED]
        for task in doomed:
            self._complete(task, UNAVAILABLE, payload)

    # ------------------------------------------------------------- results
    def _finish(self, worker: WorkerState, report: Report) -> TaskState | None:
        """Record one result; return the task if the worker cannot import its function."""
        tid = report.task
        task = self.tasks.get(tid)
        if (
            task is None
            or task.state != LEASED
            or task.worker != worker.id
            or task.attempt != report.attempt
            or (leased_at := worker.leases.pop(tid, None)) is None
        ):
            self.counts["discarded"] += 1
            log.info("discarded a late result for task %d from %s", tid, worker.label)
            return None
        status = report.status
        if status == UNAVAILABLE:
            if task.fn not in worker.quarantined:
                error = report.payload.decode("utf-8", "replace")[:2000]
                worker.quarantined[task.fn] = error
                log.warning("worker %s cannot import %s (%s); it gets none of its tasks again",
                            worker.label, task.fn, error)  # fmt: skip
            return task
        worker.done += 1
        self.durations.observe(time.monotonic() - leased_at)
        if status == RETRY:
            if task.retries < task.options.retries:
                task.retries += 1
                task.state = DELAYED
                task.worker = ""
                delay = policy.retry_delay(task.options.backoff, task.retries)
                task.available_at = time.monotonic() + delay
                heapq.heappush(self.delayed, (task.available_at, tid))
                self._saw_task(task)
                return None
            status = ERROR
        elif status not in FINAL:
            status = ERROR
        self._complete(task, status, report.payload)
        return None

    def _requeue_due(self, now: float) -> None:
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            _, tid = heapq.heappop(delayed)
            task = self.tasks.get(tid)
            if task is not None and task.state == DELAYED:
                self._push_back(task)
                if task.fn in self.unavailable:
                    self._fail_unavailable(task.fn)

    def _complete(self, task: TaskState, status: str, payload: Any) -> None:
        del self.tasks[task.id]
        self._saw_task_end(task.id)
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
            return  # its master is gone (or it never had one: a requeued dead letter)
        master.tasks.discard(task.id)
        outcome = Outcome(task.id, status, payload, master.next_seq)
        master.next_seq += 1
        master.outbox.append(outcome)
        self._saw_outcome(master.id, outcome)
        self._saw_master(master)
        self.notices.outcomes.add(master.id)

    def _dead_letter(self, task: TaskState) -> None:
        reason = policy.dead_letter_reason(task.strikes, task.history)
        attempts = [list(h) for h in task.history]
        if task.options.split:  # a map chunk: its master runs its calls one by one
            log.info("task %d (a map chunk) lost its worker; its master splits it", task.id)
            self._complete(task, LOST, {"reason": reason, "attempts": attempts})
            return
        log.error("task %d (%s) dead-lettered: %s", task.id, task.fn, reason)
        letter = DeadLetter(task.id, task.master, task.fn, task.payload, task.options, reason,
                            tuple(task.history), time.time())  # fmt: skip
        self.dead[task.id] = letter
        self._saw_dead_letter(letter)
        while len(self.dead) > DEAD_LETTERS_KEPT:
            old, _ = self.dead.popitem(last=False)
            self._saw_dead_letter_end(old)
        self.counts["dead"] += 1
        self._complete(task, LOST, {"reason": reason, "attempts": attempts})

    # ------------------------------------------------------------- masters
    def add_master(self, grace: float) -> tuple[int, int]:
        mid = self.next_master
        self.next_master += 1
        master = self.masters[mid] = MasterState(mid, grace)
        self._saw_master(master)
        return mid, mid << ID_BITS

    def resume_master(self, mid: int) -> str:
        master = self.masters.get(mid)
        if master is None:
            return f"it does not know master {mid}"
        master.expires_at = None
        self._saw_master(master)
        return ""

    def detach_master(self, mid: int) -> None:
        master = self.masters.get(mid)
        if master is None:
            return
        if master.grace <= 0:
            self.drop_master(mid)
            return
        master.expires_at = time.monotonic() + master.grace
        self._saw_master(master)
        log.info("master %d went away; its tasks are kept for %g s", mid, master.grace)

    def drop_master(self, mid: int) -> None:
        master = self.masters.pop(mid, None)
        if master is None:
            return
        self._saw_master_end(mid)
        for tid in master.tasks:
            task = self.tasks.get(tid)
            if task is not None and task.state != LEASED:
                del self.tasks[tid]
                self._saw_task_end(tid)
                self.counts["cancelled"] += 1
        log.info("master %d left; %d of its task(s) were unfinished", mid, len(master.tasks))

    def enqueue(self, mid: int, specs: list[TaskSpec]) -> None:
        master = self.masters.get(mid)
        if master is None:
            raise KeyError(f"unknown master {mid!r}")
        low, high = mid << ID_BITS, (mid + 1) << ID_BITS
        for spec in specs:
            if not low <= spec.id < high:
                raise ValueError(f"task id {spec.id!r} is not free for master {mid}")
        table = self.tasks
        front: list[TaskState] = []
        fns: set[str] = set()
        for spec in specs:
            if spec.id <= master.high_water:
                continue  # sent before (the master lost its connection meanwhile)
            master.high_water = spec.id
            task = table[spec.id] = TaskState(spec, mid)
            master.tasks.add(spec.id)
            fns.add(spec.fn)
            if spec.options.front:
                front.append(task)
            else:
                self._push_back(task)
        self._push_front(front)
        self._saw_master(master)
        for fn in fns & self.unavailable.keys():
            self._fail_unavailable(fn)

    def cancel(self, mid: int, tids: list[int]) -> list[int]:
        out = []
        master = self.masters.get(mid)
        for tid in tids:
            task = self.tasks.get(tid)
            if task is not None and task.master == mid and task.state != LEASED:
                del self.tasks[tid]
                self._saw_task_end(tid)
                self.counts["cancelled"] += 1
                if master is not None:
                    master.tasks.discard(tid)
                out.append(tid)
        return out

    def outcomes(self, mid: int, after: int, max_items: int) -> list[Outcome]:
        master = self.masters.get(mid)
        if master is None:
            raise KeyError(f"unknown master {mid!r}")
        outbox = master.outbox
        confirmed = False
        while outbox and outbox[0].seq <= after:
            outbox.popleft()
            confirmed = True
        if confirmed:
            self._saw_confirmed(mid, after)
        if not outbox or max_items <= 0:
            return []
        head = list(itertools.islice(outbox, max_items))
        return split_by_size(head, _outcome_size)[0]

    # ---------------------------------------------------------------- time
    def _check_interval(self) -> float:
        return max(0.05, self.heartbeat_timeout / 4)

    def expire(self) -> None:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._check_interval()
            for wid, worker in list(self.workers.items()):
                if now - worker.last_seen > self.heartbeat_timeout:
                    how = (f"did not come back within {self.heartbeat_timeout:g} s of a restart"
                           if worker.absent
                           else f"no heartbeat for {self.heartbeat_timeout:g} s")  # fmt: skip
                    self.counts["lease_expired"] += len(worker.leases)
                    self.lose_worker(wid, how)
        self._requeue_due(now)
        for mid, master in list(self.masters.items()):
            if master.expires_at is not None and master.expires_at <= now:
                log.warning("master %d did not come back within %g s", mid, master.grace)
                self.drop_master(mid)
        for fn, at in list(self.give_up_at.items()):
            if at <= now:
                self._give_up(fn)

    def next_due(self) -> float:
        due = [self._next_check] if self.workers else []
        if self.delayed:
            due.append(self.delayed[0][0])
        due.extend(self.give_up_at.values())
        due.extend(m.expires_at for m in self.masters.values() if m.expires_at is not None)
        return min(due, default=float("inf"))

    # ---------------------------------------------------------- inspection
    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        leased = sum(len(w.leases) for w in self.workers.values())
        second = now // 1
        recent = sum(count for sec, count in self._finished if sec >= second - 60)
        delayed = sum(1 for t in self.tasks.values() if t.state == DELAYED)
        return {
            "tasks": {
                "queued": len(self.tasks) - leased - delayed,
                "leased": leased,
                "delayed": delayed,
                **self.counts,
            },
            "recent": recent,
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
                    "heartbeat_ago": now - w.last_seen,
                    "leaving": w.leaving,
                    "absent": w.absent,
                    "quarantined": [
                        {"function": fn, "error": error} for fn, error in w.quarantined.items()
                    ],
                }
                for w in self.workers.values()
            ],
            "dead_letters": [d.to_wire() for d in self.dead.values()],
            "gone_workers": list(self.gone),
            "durations": self.durations.to_wire(),
            "store": self.describe(),
        }

    def dead_letters(self) -> list[DeadLetter]:
        return list(self.dead.values())

    def requeue_dead(self, tids: Iterable[int]) -> list[int]:
        found = []
        for tid in tids:
            letter = self.dead.pop(tid, None)
            if letter is None or tid in self.tasks:
                continue
            self._saw_dead_letter_end(tid)
            spec = TaskSpec(tid, letter.fn, letter.payload, letter.options)
            task = self.tasks[tid] = TaskState(spec, NO_MASTER)
            task.history = []
            task.strikes = 0
            self._push_back(task)
            found.append(tid)
            log.info("dead letter %d (%s) queued again", tid, letter.fn)
        return found


def _outcome_size(outcome: Outcome) -> int:
    payload = outcome.payload
    return len(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else 0
