"""The task service: a task backend on a server's event loop, reached over the network.

This module is the network adapter only.  The state and its transitions are
the backend's (:mod:`.backends`); here is what a network needs on top:

* **Loop methods** (:mod:`distproc.server.loop_service`): each call from a
  master or a worker becomes one backend step, answered through its
  :class:`~distproc.server.LoopCall`.
* **Held calls**: a worker that waits for tasks, a heartbeat held until
  there is news, a master's long poll for outcomes.  After every step the
  service reads the backend's notices and answers the calls that can now be
  answered.
* **Timers**: one, armed for the backend's :meth:`~.backends.TaskBackend.next_due`
  (silent workers, due retries, absent masters, functions nobody can import).
* **Connections**: a worker and a master are bound to the connection they
  said hello on.  When it closes, a worker is lost (its leases go back to the
  queue at once) and a master is detached (its tasks are kept for the grace it
  asked for, so it can come back).  A call for a worker or master that is not
  bound to the call's connection is answered "say hello again": that is how
  masters and workers find out that the service restarted, and come back.
* **Group commit**: with a durable backend, the answers to the calls in hand
  wait until one :meth:`~.backends.TaskBackend.commit` has made their changes
  durable, at the end of the loop's iteration; if it fails (a full disk), the
  backend goes back to what is stored and those calls fail with its error.
  A change that no call waits for (a worker lost, a timer's expiry) is
  committed the same way, so that a dead letter or a strike is in the store
  even if the service dies before its next call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from ..errors import StoreError
from ..server import CallConnection, LoopCall
from .backends import TaskBackend
from .backends.memory import MemoryBackend
from .records import ID_BITS, Lease, Outcome, Report, TaskSpec, WorkerHello

__all__ = ["Sink", "TaskService", "check_options"]

log = logging.getLogger("distproc.tasks")

#: Where an in-process master gets its outcomes, on the loop.
Sink = Callable[[list[Outcome]], None]
#: An answer waiting for the commit: what to do if it succeeds, and if it fails.
_Pending = tuple[Callable[[], None], Callable[[BaseException], None]]
_MANY = 1 << 30


def check_options(max_attempts: int, heartbeat_timeout: float) -> None:
    """Refuse a service's options that could never work."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if heartbeat_timeout <= 0:
        raise ValueError("heartbeat_timeout must be positive")


class _Held:
    """A call held on the loop until there is something to answer, or a deadline."""

    __slots__ = ("after", "call", "timer", "want")

    def __init__(self, call: LoopCall, want: int = 0, after: int = 0) -> None:
        self.call = call
        self.want = want
        self.after = after
        self.timer: asyncio.TimerHandle | None = None

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


class TaskService:
    """The task service.  See the module docstring; one lives on a server's loop."""

    __distproc_loop_methods__ = frozenset(
        ("hello_worker", "exchange", "heartbeat", "give_back", "goodbye", "hello_master",
         "goodbye_master", "submit", "results", "cancel", "status", "dead_letters", "requeue",
         "initializer_failed")
    )  # fmt: skip
    #: Every call waits for its reply: a master learns that its tasks are stored.
    __distproc_defer__: tuple[str, ...] = ()

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        backend: TaskBackend | None = None,
        *,
        max_attempts: int = 3,
        heartbeat_timeout: float = 10.0,
        address: str = "",
    ) -> None:
        check_options(max_attempts, heartbeat_timeout)
        self.loop = loop
        self.backend = backend or MemoryBackend(
            max_attempts=max_attempts, heartbeat_timeout=heartbeat_timeout
        )
        self.heartbeat_timeout = self.backend.heartbeat_timeout
        self.address = address
        self.started = time.monotonic()
        self._durable = self.backend.capabilities.group_commit
        self._waiters: dict[str, _Held] = {}  # exchanges waiting for tasks
        self._heartbeats: dict[str, _Held] = {}  # heartbeats held until there is news
        self._polls: dict[int, _Held] = {}  # masters' long polls for outcomes
        self._sinks: dict[int, list[Any]] = {}  # in-process masters: [sink, last seq]
        self._worker_conn: dict[str, CallConnection] = {}
        self._master_conn: dict[int, CallConnection] = {}
        self._watched: set[tuple[int, str]] = set()  # (connection, who) with a close callback
        self._pending: list[_Pending] = []
        self._commit_scheduled = False
        self._deliver_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        #: Handed to each worker that joins: ``init`` ([function ref, payload]: the
        #: Executor's initializer) and ``max_tasks`` (its max_tasks_per_child).
        self.worker_setup: dict[str, Any] = {}
        #: Called with (worker id, error record) when a worker's initializer raised.
        self.on_initializer_failed: Callable[[str, Any], None] | None = None
        #: Called with the ids of tasks just leased (an in-process master's futures run).
        self.on_leased: Callable[[list[int]], None] | None = None
        self._arm()

    @property
    def closing(self) -> bool:
        return self.backend.closing

    @closing.setter
    def closing(self, value: bool) -> None:
        self.backend.closing = value

    # ----------------------------------------------------------- answering
    def _answer(self, call: LoopCall, value: Any) -> None:
        """Reply now, or once the changes so far are stored (a durable backend)."""
        if self._durable:
            self._pending.append((lambda: call.reply(value), call.fail))
            self._schedule_commit()
        else:
            call.reply(value)

    def _answer_held(self, held: _Held, value: Any) -> None:
        held.stop_timer()
        self._answer(held.call, value)

    def _schedule_commit(self) -> None:
        if not self._commit_scheduled:
            self._commit_scheduled = True
            self.loop.call_soon(self._commit)

    def _commit(self) -> None:
        """One commit for every call in hand; then their answers (or their failure)."""
        self._commit_scheduled = False
        pending, self._pending = self._pending, []
        try:
            self.backend.commit()
        except StoreError as exc:
            log.error("%s; %d call(s) failed, the store keeps what it had", exc, len(pending))
            self.backend.reload()
            self._sync_sinks()
            for _, fail in pending:
                fail(exc)
            self._after()
            return
        for ok, _ in pending:
            ok()

    def _after(self) -> None:
        """Act on what the last step changed: wake, deliver, ask; re-arm the timer."""
        notices = self.backend.take_notices()
        if notices.ready:
            self._wake()
        for wid in notices.give_back:
            held = self._heartbeats.pop(wid, None)
            if held is not None:
                self._answer_held(held, self._news(wid))
        for mid in notices.outcomes:
            if mid in self._sinks:
                self._schedule_delivery()
                continue
            held = self._polls.get(mid)
            if held is not None:
                outcomes = self.backend.outcomes(mid, held.after, held.want)
                if outcomes:
                    del self._polls[mid]
                    self._answer_held(held, [o.to_wire() for o in outcomes])
        if self._durable:  # a change that no answer waits for (a worker lost, a retry due)
            self._schedule_commit()
        self._arm()

    def _arm(self) -> None:
        due = self.backend.next_due()
        if due >= self._timer_at - 0.001:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due
        self._timer = self.loop.call_later(max(0.0, due - time.monotonic()), self._tick)

    def _tick(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        self.backend.expire()
        self._after()

    # -------------------------------------------------------- connections
    def _watch(self, conn: CallConnection, key: str, lost: Callable[[], None]) -> None:
        if (id(conn), key) not in self._watched:
            self._watched.add((id(conn), key))
            conn.close_callbacks.append(lost)

    def _worker_on(self, call: LoopCall, wid: str) -> bool:
        return self._worker_conn.get(wid) is call.connection and self.backend.knows_worker(wid)

    def _worker_conn_lost(self, wid: str, conn: CallConnection) -> None:
        self._watched.discard((id(conn), f"w:{wid}"))
        if self._worker_conn.get(wid) is not conn:
            return
        del self._worker_conn[wid]
        for table in (self._waiters, self._heartbeats):
            held = table.pop(wid, None)
            if held is not None:
                held.stop_timer()
        if self.closing and self.backend.capabilities.durable:
            return  # the service stops: the worker comes back to the next one
        self.backend.lose_worker(wid, "connection lost")
        self._after()

    def _master_conn_lost(self, mid: int, conn: CallConnection) -> None:
        self._watched.discard((id(conn), f"m:{mid}"))
        if self._master_conn.get(mid) is not conn:
            return
        del self._master_conn[mid]
        held = self._polls.pop(mid, None)
        if held is not None:
            held.stop_timer()
        if self.closing and self.backend.capabilities.durable:
            return
        self.backend.detach_master(mid)
        self._after()

    # ------------------------------------------------------------ workers
    def hello_worker(self, call: LoopCall, info: Any) -> None:
        """A worker joins (``info``: see :class:`~.records.WorkerHello`), or comes back."""
        try:
            hello = WorkerHello.from_wire(info if info is not None else {})
        except ValueError as exc:
            call.fail(exc)
            return
        joined = self.backend.add_worker(hello)
        wid = joined.worker
        conn = call.connection
        old = self._worker_conn.get(wid)
        if old is not None and old is not conn:  # it moved: its old calls are stale
            for table in (self._waiters, self._heartbeats):
                held = table.pop(wid, None)
                if held is not None:
                    self._answer_held(held, None)
        self._worker_conn[wid] = conn
        self._watch(conn, f"w:{wid}", lambda: self._worker_conn_lost(wid, conn))
        self._answer(call, {"worker": wid, "heartbeat": self.heartbeat_timeout / 4,
                            "store": self.backend.store_id, "resumed": joined.resumed,
                            "reason": joined.reason, **self.worker_setup})  # fmt: skip
        self._after()

    def initializer_failed(self, call: LoopCall, wid: str, record: Any) -> None:
        """Worker ``wid``'s initializer raised (``record``: see ``payloads.error_record``)."""
        log.error("the initializer raised in worker %s: %s", wid,
                  record.get("message") if isinstance(record, dict) else record)  # fmt: skip
        hook = self.on_initializer_failed
        if hook is not None:
            hook(wid, record)
        self._answer(call, None)

    def exchange(
        self, call: LoopCall, wid: str, results: list[Any], want: int, wait: float = 0.0
    ) -> None:
        """Take a worker's finished results; answer with up to ``want`` new tasks.

        With no task to give and ``wait`` > 0 the call is held until there is
        one or ``wait`` passes.  ``None`` means "say hello again": the worker
        is unknown (its leases were lost) or joined on another connection.
        """
        try:
            reports = [Report.from_wire(r) for r in results]
        except ValueError as exc:
            call.fail(exc)
            return
        backend = self.backend
        if not self._worker_on(call, wid):
            if not backend.knows_worker(wid):
                backend.report(wid, reports)  # late: counted as discarded
            call.reply(None)
            return
        backend.touch_worker(wid)
        backend.report(wid, reports)
        held = self._waiters.pop(wid, None)
        if held is not None:
            self._answer_held(held, [])
        if want <= 0 or backend.is_leaving(wid):
            self._answer(call, [])
            self._after()
            return
        leases = self._lease(wid, want)
        if leases or wait <= 0 or backend.holds_leases(wid):
            # A worker that still holds leases has tasks in its buffer (another of
            # its threads refilled it) or results on the way: it must not wait here.
            self._answer(call, [lease.to_wire() for lease in leases])
            self._after()
            return
        held = self._waiters[wid] = _Held(call, want)
        held.timer = self.loop.call_later(wait, self._wait_over, wid, held)
        call.on_cancel(lambda: self._wait_over(wid, held))
        backend.ask_give_back(wid)
        self._after()

    def _lease(self, wid: str, want: int) -> list[Lease]:
        leases: list[Lease] = self.backend.lease(wid, want)
        hook = self.on_leased
        if leases and hook is not None:
            hook([lease.task for lease in leases])
        return leases

    def _wait_over(self, wid: str, held: _Held) -> None:
        if self._waiters.get(wid) is held:
            del self._waiters[wid]
            self._answer_held(held, [])

    def _wake(self) -> None:
        """Hand queued tasks to workers that wait for them."""
        for wid, held in list(self._waiters.items()):
            leases = self._lease(wid, held.want)
            if leases:
                del self._waiters[wid]
                self._answer_held(held, [lease.to_wire() for lease in leases])

    def heartbeat(self, call: LoopCall, wid: str, hold: float = 0.0) -> None:
        """A worker is alive; held up to ``hold`` s unless the service wants tasks back."""
        if not self._worker_on(call, wid):
            call.reply(None)
            return
        self.backend.touch_worker(wid)
        old = self._heartbeats.pop(wid, None)
        if old is not None:
            self._answer_held(old, {})
        news = self._news(wid)
        if news or hold <= 0:
            self._answer(call, news)
            return
        held = self._heartbeats[wid] = _Held(call)
        held.timer = self.loop.call_later(min(hold, self.heartbeat_timeout / 2), self._hb_over,
                                          wid, held)  # fmt: skip
        call.on_cancel(lambda: self._hb_over(wid, held))

    def _hb_over(self, wid: str, held: _Held) -> None:
        if self._heartbeats.get(wid) is held:
            del self._heartbeats[wid]
            self._answer_held(held, self._news(wid))

    def _news(self, wid: str) -> dict[str, Any]:
        count = self.backend.take_give_back(wid)
        return {"give_back": count} if count else {}

    def give_back(self, call: LoopCall, wid: str, tids: list[int]) -> None:
        """A worker returns leased tasks it has not started; they are queued again first."""
        if self._worker_on(call, wid):
            self.backend.give_back(wid, _ints(tids))
        self._answer(call, None)
        self._after()

    def goodbye(self, call: LoopCall, wid: str, tids: list[int]) -> None:
        """A worker is stopping: it returns unstarted tasks and takes no new ones."""
        if self._worker_on(call, wid):
            self.backend.leave(wid, _ints(tids))
            # Its held calls would keep it waiting up to their deadlines: answer them now.
            held = self._waiters.pop(wid, None)
            if held is not None:
                self._answer_held(held, [])
            held = self._heartbeats.pop(wid, None)
            if held is not None:
                self._answer_held(held, self._news(wid))
        self._answer(call, None)
        self._after()

    # ----------------------------------------------------------- masters
    def add_master(self, sink: Sink) -> tuple[int, int]:
        """Register an in-process master, whose outcomes go to ``sink`` on the loop."""
        mid, base = self.backend.add_master(0.0)
        self._sinks[mid] = [sink, 0]
        if self._durable:
            self._schedule_commit()
        return mid, base

    def add_tasks(
        self, mid: int, specs: list[TaskSpec],
        done: Callable[[BaseException | None], None] | None = None,
    ) -> None:  # fmt: skip
        """Queue an in-process master's tasks; ``done`` hears once they are stored."""
        try:
            self.backend.enqueue(mid, specs)
        except Exception as exc:
            if done is None:
                raise
            done(exc)
            return
        if done is not None:
            if self._durable:
                self._pending.append((lambda: done(None), done))
                self._schedule_commit()
            else:
                done(None)
        self._after()

    def cancel_tasks(self, mid: int, tids: list[int]) -> list[int]:
        """Cancel tasks of master ``mid`` that have not started; return those cancelled."""
        out = self.backend.cancel(mid, tids)
        if self._durable:
            self._schedule_commit()
        return out

    def _schedule_delivery(self) -> None:
        if not self._deliver_scheduled:
            self._deliver_scheduled = True
            if self._durable:  # once the outcomes are stored
                self._pending.append((self._deliver, lambda exc: self._deliver_done()))
                self._schedule_commit()
            else:
                self.loop.call_soon(self._deliver)

    def _deliver_done(self) -> None:
        self._deliver_scheduled = False

    def _deliver(self) -> None:
        self._deliver_scheduled = False
        for mid, entry in list(self._sinks.items()):
            sink, last = entry
            try:
                outcomes = self.backend.outcomes(mid, last, _MANY)
            except KeyError:
                continue
            while outcomes:
                last = entry[1] = outcomes[-1].seq
                try:
                    sink(outcomes)
                except Exception:
                    log.exception("a master's result sink failed")
                outcomes = self.backend.outcomes(mid, last, _MANY)

    def _sync_sinks(self) -> None:
        """After a reload: deliver again what is stored and the sinks have not confirmed."""
        if self._sinks:
            self._schedule_delivery()

    def _master_on(self, call: LoopCall, mid: int) -> bool:
        if self._master_conn.get(mid) is call.connection:
            return True
        call.fail(KeyError(f"unknown master {mid!r} on this connection: say hello_master"))
        return False

    def hello_master(
        self, call: LoopCall, resume: dict[str, Any] | None = None, grace: float = 0.0
    ) -> None:
        """A remote master joins, or comes back (``resume``: ``{"store", "master"}``).

        Its tasks are kept for ``grace`` s when its connection drops (0: cancelled at once).
        """
        backend = self.backend
        if resume is not None:
            store, mid = resume.get("store"), resume.get("master")
            if type(mid) is not int:
                call.fail(ValueError("resume needs the master's id"))
                return
            reason = ("its store is new (a store kept in memory starts empty when the "
                      "service restarts)" if store != backend.store_id
                      else backend.resume_master(mid))  # fmt: skip
            if reason:
                call.reply({"resumed": False, "reason": reason, "store": backend.store_id})
                return
            base = mid << ID_BITS
        else:
            mid, base = backend.add_master(max(0.0, float(grace)))
        conn = call.connection
        self._master_conn[mid] = conn
        self._watch(conn, f"m:{mid}", lambda: self._master_conn_lost(mid, conn))
        self._answer(call, {"master": mid, "base": base, "store": backend.store_id,
                            "resumed": resume is not None})  # fmt: skip
        self._after()

    def goodbye_master(self, call: LoopCall, mid: int) -> None:
        """A master leaves for good: its queued tasks are cancelled."""
        if self._master_on(call, mid):
            del self._master_conn[mid]
            held = self._polls.pop(mid, None)
            if held is not None:
                self._answer_held(held, [])
            self.backend.drop_master(mid)
            self._answer(call, None)
            self._after()

    def submit(self, call: LoopCall, mid: int, tasks: list[Any]) -> None:
        """Queue tasks of master ``mid``; answered once they are stored."""
        if not self._master_on(call, mid):
            return
        try:
            specs = [TaskSpec.from_wire(t) for t in tasks]
            self.backend.enqueue(mid, specs)
        except (KeyError, ValueError) as exc:
            call.fail(exc)
            return
        self._answer(call, None)
        self._after()

    def results(
        self, call: LoopCall, mid: int, max_items: int, wait: float = 0.0, after: int = 0
    ) -> None:
        """Up to ``max_items`` outcomes of master ``mid`` past ``after`` (those up to it
        are confirmed: the master has them); held up to ``wait`` s for one."""
        if not self._master_on(call, mid):
            return
        old = self._polls.pop(mid, None)
        if old is not None:
            self._answer_held(old, [])
        outcomes = self.backend.outcomes(mid, after, max_items)
        if outcomes or wait <= 0:
            self._answer(call, [o.to_wire() for o in outcomes])
            return
        held = self._polls[mid] = _Held(call, max_items, after)

        def over() -> None:
            if self._polls.get(mid) is held:
                del self._polls[mid]
                self._answer_held(held, [])

        held.timer = self.loop.call_later(wait, over)
        call.on_cancel(over)
        if self._durable:
            self._schedule_commit()  # the confirmation

    def cancel(self, call: LoopCall, mid: int, tids: list[int]) -> None:
        if self._master_on(call, mid):
            self._answer(call, self.backend.cancel(mid, _ints(tids)))

    # ------------------------------------------------------------ status
    def status(self, call: LoopCall) -> None:
        call.reply(self.__distproc_status__())

    def dead_letters(self, call: LoopCall) -> None:
        """The dead letters kept, oldest first."""
        call.reply([letter.to_wire() for letter in self.backend.dead_letters()])

    def requeue(self, call: LoopCall, tids: list[int]) -> None:
        """Queue these dead letters again; answered with the ids found."""
        self._answer(call, self.backend.requeue_dead(_ints(tids)))
        self._after()

    def __distproc_status__(self) -> dict[str, Any]:
        now = time.monotonic()
        report = self.backend.status()
        window = min(60.0, max(1.0, now - self.started))
        return {
            "kind": "tasks",
            "address": self.address,
            "pid": os.getpid(),
            "uptime": now - self.started,
            "tasks": report["tasks"],
            "throughput_1m": report["recent"] / window,
            "masters": report["masters"],
            "workers": report["workers"],
            "dead_letters": report["dead_letters"],
            # Stats a backend may keep: for the dashboard and /metrics.
            "gone_workers": report.get("gone_workers", []),
            "durations": report.get("durations"),
            "store": report["store"],
        }

    def worker_count(self) -> int:
        return self.backend.worker_count()

    def close(self) -> None:
        """Stop the timer, store what is in hand, and close the backend (the server stops)."""
        if self._timer is not None:
            self._timer.cancel()
        pending, self._pending = self._pending, []
        try:
            self.backend.commit()
        except StoreError as exc:
            log.error("%s; the last changes were not stored", exc)
            for _, fail in pending:
                fail(exc)
        else:
            for ok, _ in pending:
                ok()
        self.backend.close()


def _ints(values: Any) -> list[int]:
    if not isinstance(values, (list, tuple)) or any(type(v) is not int for v in values):
        raise ValueError("task ids must be a list of ints")
    return list(values)
