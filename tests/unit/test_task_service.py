"""The task service's state machine, driven directly on an event loop with stand-in calls.

Every test runs against every backend (the ``backend`` fixture): they keep
the same guarantees.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from distproc.errors import StoreError
from distproc.tasks import policy, records
from distproc.tasks.backends import TaskBackend, open_backend
from distproc.tasks.records import ERROR, LOST, OK, RETRY, UNAVAILABLE, Outcome, TaskSpec
from distproc.tasks.service import TaskService


class FakeConnection:
    def __init__(self) -> None:
        self.close_callbacks: list[Callable[[], None]] = []

    def drop(self) -> None:
        for callback in self.close_callbacks:
            callback()


class FakeCall:
    """What a loop method receives: answers are recorded; ``cancel`` mimics a dropped client."""

    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection
        self.replies: list[Any] = []
        self.failures: list[BaseException] = []
        self.cancel: Callable[[], None] | None = None

    def reply(self, value: Any) -> None:
        self.replies.append(value)

    def fail(self, exc: BaseException) -> None:
        self.failures.append(exc)

    def on_cancel(self, callback: Callable[[], None]) -> None:
        self.cancel = callback

    @property
    def answered(self) -> bool:
        return bool(self.replies or self.failures)

    @property
    def value(self) -> Any:
        assert len(self.replies) == 1, self.replies
        return self.replies[0]


class Harness:
    def __init__(self, loop: asyncio.AbstractEventLoop, backend: TaskBackend) -> None:
        self.loop = loop
        self.backend = backend
        self.service = TaskService(loop, backend)
        self.results: list[list[Any]] = []
        self.mid, self.base = self.service.add_master(self._collect)
        self.next_id = self.base + 1
        self.conns: dict[str, FakeConnection] = {}

    def _collect(self, outcomes: list[Outcome]) -> None:
        self.results.extend(o.to_wire()[:3] for o in outcomes)

    def run(self, seconds: float = 0.0) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def submit(self, count: int, **opts: Any) -> list[int]:
        tids = list(range(self.next_id, self.next_id + count))
        self.next_id += count
        self.add(tids, b"n", **opts)
        return tids

    def add(self, tids: list[int], payload: bytes, **opts: Any) -> None:
        specs = [TaskSpec.from_wire([t, "m:f", payload, opts or None]) for t in tids]
        self.service.add_tasks(self.mid, specs)
        self.run()

    def worker(self, slots: int = 1) -> tuple[str, FakeConnection]:
        conn = FakeConnection()
        call = FakeCall(conn)
        self.service.hello_worker(call, {"host": "h", "pid": 1, "slots": slots})
        self.run()
        wid: str = call.value["worker"]
        self.conns[wid] = conn
        return wid, conn

    def call(self, wid: str) -> FakeCall:
        """A call on ``wid``'s connection (a new one for a worker never seen)."""
        return FakeCall(self.conns.get(wid) or FakeConnection())

    def exchange(
        self, wid: str, results: list[Any] | None = None, want: int = 1, wait: float = 0.0
    ) -> FakeCall:
        call = self.call(wid)
        self.service.exchange(call, wid, results or [], want, wait)
        self.run()
        return call

    def drop(self, conn: FakeConnection) -> None:
        """The connection is lost (its close callbacks run), then the loop turns."""
        conn.drop()
        self.run()

    def discarded(self) -> int:
        count: int = self.backend.status()["tasks"]["discarded"]
        return count

    def outcomes(self) -> dict[int, str]:
        self.run()
        return {tid: status for tid, status, _ in self.results}


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(params=["memory", "sqlite"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Callable[..., Any]]:
    """``make_backend(**options)``: a new backend of the kind under test."""
    made: list[TaskBackend] = []

    def make(**options: Any) -> TaskBackend:
        store = None if request.param == "memory" else str(tmp_path / f"tasks{len(made)}.db")
        backend = open_backend(store, **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def h(loop: asyncio.AbstractEventLoop, make_backend: Callable[..., Any]) -> Iterator[Harness]:
    harness = Harness(loop, make_backend(max_attempts=3, heartbeat_timeout=60.0))
    yield harness
    harness.service.close()


def test_tasks_are_leased_run_and_reported_once(h: Harness) -> None:
    tids = h.submit(3)
    wid, _ = h.worker()
    leased = h.exchange(wid, want=10).value
    assert [t[0] for t in leased] == tids
    done = [[t[0], t[1], OK, b"r"] for t in leased]
    h.exchange(wid, done, want=0)
    h.exchange(wid, done, want=0)  # the same results again: discarded
    assert h.outcomes() == dict.fromkeys(tids, OK)
    assert len(h.results) == 3
    assert h.discarded() == 3


def test_a_dropped_connection_requeues_its_leases_at_once(h: Harness) -> None:
    [tid] = h.submit(1)
    a, conn_a = h.worker()
    b, _ = h.worker()
    [task] = h.exchange(a).value
    waiting = h.exchange(b, wait=30)
    assert not waiting.answered
    h.drop(conn_a)
    assert [t[0] for t in waiting.value] == [tid]  # handed to the waiting worker at once
    h.exchange(a, [[tid, task[1], OK, b"late"]], want=0)  # a is unknown now
    assert h.outcomes() == {}
    h.exchange(b, [[tid, waiting.value[0][1], OK, b"r"]], want=0)
    assert h.outcomes() == {tid: OK}


def test_a_task_that_takes_down_max_attempts_workers_is_dead_lettered(h: Harness) -> None:
    [tid] = h.submit(1)
    for _ in range(3):
        wid, conn = h.worker()
        assert [t[0] for t in h.exchange(wid).value] == [tid]
        h.drop(conn)
    assert h.outcomes() == {tid: LOST}
    [(_, _, info)] = h.results
    assert len(info["attempts"]) == 3
    assert "took down 3 worker(s)" in info["reason"]
    assert h.service.__distproc_status__()["tasks"]["dead"] == 1


def test_a_worker_lost_with_a_batch_makes_suspects_that_run_alone(h: Harness) -> None:
    tids = h.submit(4)
    a, conn_a = h.worker()
    assert len(h.exchange(a, want=4).value) == 4
    h.drop(conn_a)  # which of the four did it? none gets a strike
    b, conn_b = h.worker()
    first = h.exchange(b, want=4).value
    assert [t[0] for t in first] == [tids[0]]  # a suspect runs alone
    h.drop(conn_b)  # now it is certain
    c, _ = h.worker()
    again = h.exchange(c, want=4).value
    assert [t[0] for t in again] == [tids[0]]
    status = h.backend.tasks[tids[0]]  # type: ignore[attr-defined]  # memory-derived
    assert status.strikes == 1 and len(status.history) == 2
    assert h.outcomes() == {}


def test_missed_heartbeats_cost_the_leases(
    loop: asyncio.AbstractEventLoop, make_backend: Callable[..., Any]
) -> None:
    h = Harness(loop, make_backend(heartbeat_timeout=0.2))
    try:
        [tid] = h.submit(1)
        wid, _ = h.worker()
        [task] = h.exchange(wid).value
        h.run(0.6)
        assert not h.backend.knows_worker(wid)
        assert h.backend.status()["tasks"]["queued"] == 1
        late = h.exchange(wid, [[tid, task[1], OK, b"late"]])
        assert late.value is None  # "join again"
        assert h.discarded() == 1
    finally:
        h.service.close()


def test_an_idle_worker_makes_a_hoarder_give_back_unstarted_tasks(h: Harness) -> None:
    tids = h.submit(10)
    a, _ = h.worker()
    assert len(h.exchange(a, want=10).value) == 10
    heartbeat = h.call(a)
    h.service.heartbeat(heartbeat, a, 30.0)
    h.run()
    assert not heartbeat.answered
    b, _ = h.worker()
    waiting = h.exchange(b, want=5, wait=30)
    assert heartbeat.value == {"give_back": 5}  # a holds 9 beyond its one slot
    h.service.give_back(h.call(a), a, tids[5:])
    h.run()
    # b gets its fair share of the five returned tasks at once (two workers: three).
    assert [t[0] for t in waiting.value] == tids[5:8]


def test_a_fair_share_when_several_workers_compete(h: Harness) -> None:
    h.submit(10)
    a, _ = h.worker()
    h.worker()
    assert len(h.exchange(a, want=100).value) == 5


def test_retries_for_named_errors_back_off_then_fail(h: Harness) -> None:
    [tid] = h.submit(1, retry_on=["builtins:ConnectionError"], retries=2, backoff=0.01)
    wid, _ = h.worker()
    for _ in range(3):
        waiting = h.exchange(wid, wait=5)
        h.run(0.05)
        [task] = waiting.value
        h.exchange(wid, [[tid, task[1], RETRY, b"e"]], want=0)
    assert h.outcomes() == {tid: ERROR}


def test_cancelled_and_orphaned_tasks_never_run(h: Harness) -> None:
    tids = h.submit(3)
    assert h.service.cancel_tasks(h.mid, tids[:2]) == tids[:2]
    wid, _ = h.worker()
    assert [t[0] for t in h.exchange(wid, want=5).value] == tids[2:]
    assert h.service.cancel_tasks(h.mid, tids[2:]) == []  # running: not cancelled
    h.backend.drop_master(h.mid)
    h.exchange(wid, [[tids[2], 1, OK, b"r"]], want=0)
    assert h.results == []  # its master is gone


def test_a_remote_master_collects_results_by_long_poll(h: Harness) -> None:
    conn = FakeConnection()
    hello = FakeCall(conn)
    h.service.hello_master(hello)
    h.run()
    mid, base = hello.value["master"], hello.value["base"]
    submit = FakeCall(conn)
    h.service.submit(submit, mid, [[base + 1, "m:f", b"n", None]])
    h.run()
    assert submit.value is None
    poll = FakeCall(conn)
    h.service.results(poll, mid, 100, 30.0)
    h.run()
    assert not poll.answered
    wid, _ = h.worker()
    [task] = h.exchange(wid).value
    h.exchange(wid, [[task[0], task[1], OK, b"r"]], want=0)
    assert poll.value == [[base + 1, OK, b"r", 1]]
    bad = FakeCall(conn)
    h.service.submit(bad, mid, [[h.base + 999, "m:f", b"n", None]])  # another master's ids
    assert isinstance(bad.failures[0], ValueError)


def test_a_worker_that_holds_leases_is_not_kept_waiting(h: Harness) -> None:
    """Its buffer was refilled by another of its threads: waiting would stall it."""
    h.submit(2)
    wid, _ = h.worker()
    assert len(h.exchange(wid, want=2).value) == 2  # a background refill took both
    blocking = h.exchange(wid, want=10, wait=30)  # the task thread found its buffer empty
    assert blocking.value == []  # answered at once: the refilled tasks are waiting there


# ---------------------------------------------------- functions a worker cannot import
def test_a_task_a_worker_cannot_import_goes_back_first_with_no_strike(h: Harness) -> None:
    tids = h.submit(3)
    bad, _ = h.worker()
    good, _ = h.worker()
    [task] = h.exchange(bad).value
    h.exchange(bad, [[task[0], task[1], UNAVAILABLE, b"ModuleNotFoundError: No module named 'm'"]],
               want=0)  # fmt: skip
    service = h.service
    state = h.backend.tasks[tids[0]]  # type: ignore[attr-defined]  # memory-derived
    assert state.strikes == 0 and not state.history
    assert list(h.backend.ready)[:1] == [tids[0]]  # type: ignore[attr-defined]  # at the front
    assert h.exchange(bad, want=5).value == []  # the bad worker gets none of them again
    leased = [t[0] for t in h.exchange(good, want=5).value]  # a fair share: two of three
    leased += [t[0] for t in h.exchange(good, want=5).value]
    assert leased == tids
    [report] = [w for w in service.__distproc_status__()["workers"] if w["id"] == bad]
    assert report["quarantined"] == [
        {"function": "m:f", "error": "ModuleNotFoundError: No module named 'm'"}
    ]
    assert h.outcomes() == {}


def test_when_every_worker_quarantined_a_function_its_tasks_fail_naming_them(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policy, "UNAVAILABLE_GRACE", 0.05)
    tids = h.submit(2)
    said = {}
    for error in ("ModuleNotFoundError: No module named 'm'", "RuntimeError: no GPU"):
        wid, _ = h.worker()
        [task] = h.exchange(wid).value
        h.exchange(wid, [[task[0], task[1], UNAVAILABLE, error.encode()]], want=0)
        said[wid] = error
    h.run(0.2)
    assert h.outcomes() == dict.fromkeys(tids, UNAVAILABLE)
    payload = h.results[0][2]
    assert payload["reason"].startswith("no connected worker can import m:f: ")
    assert [error for _, error in payload["workers"]] == list(said.values())
    # Later tasks of it fail at once, until a worker that might import it joins.
    [late] = h.submit(1)
    assert h.outcomes()[late] == UNAVAILABLE
    h.worker()
    [kept] = h.submit(1)
    h.run(0.2)
    assert kept not in h.outcomes()


def test_a_worker_joining_within_the_grace_saves_the_tasks(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policy, "UNAVAILABLE_GRACE", 0.1)
    [tid] = h.submit(1)
    bad, _ = h.worker()
    [task] = h.exchange(bad).value
    h.exchange(bad, [[tid, task[1], UNAVAILABLE, b"ImportError: x"]], want=0)
    good, _ = h.worker()  # joined before the grace ran out
    h.run(0.3)
    assert h.outcomes() == {}
    [again] = h.exchange(good).value
    h.exchange(good, [[tid, again[1], OK, b"r"]], want=0)
    assert h.outcomes() == {tid: OK}


def test_front_tasks_are_queued_before_the_others(h: Harness) -> None:
    back = h.submit(3)
    front = h.submit(2, front=True)
    wid, _ = h.worker()
    assert [t[0] for t in h.exchange(wid, want=10).value] == front + back


def test_a_leaving_worker_is_answered_at_once(h: Harness) -> None:
    wid, _ = h.worker()
    waiting = h.exchange(wid, want=1, wait=30)
    heartbeat = h.call(wid)
    h.service.heartbeat(heartbeat, wid, 30.0)
    h.run()
    assert not waiting.answered and not heartbeat.answered
    h.service.goodbye(h.call(wid), wid, [])
    h.run()
    # Not at the end of their 30 s: the worker can stop now.
    assert waiting.value == [] and heartbeat.value == {}


def test_a_lease_holds_a_bounded_number_of_bytes(h: Harness) -> None:
    big = b"n" + b"x" * (records.BATCH_BYTES // 2)
    tids = list(range(h.next_id, h.next_id + 4))
    h.next_id += 4
    h.add(tids, big)
    wid, _ = h.worker()
    assert len(h.exchange(wid, want=4).value) == 2


def test_when_the_last_worker_that_could_import_it_leaves_its_tasks_fail(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policy, "UNAVAILABLE_GRACE", 0.05)
    tids = h.submit(2)
    bad, _ = h.worker()
    _, good_conn = h.worker()
    [task] = h.exchange(bad).value
    h.exchange(bad, [[task[0], task[1], UNAVAILABLE, b"ImportError: x"]], want=0)
    h.run(0.2)
    assert h.outcomes() == {}  # the good worker may still run them
    h.drop(good_conn)
    h.run(0.2)
    assert h.outcomes() == dict.fromkeys(tids, UNAVAILABLE)
    assert h.results[0][2]["workers"] == [[f"{bad} (h pid 1)", "ImportError: x"]]


# ----------------------------------------------------------------- capabilities
def _remote_master(h: Harness) -> tuple[FakeConnection, int, int]:
    conn = FakeConnection()
    hello = FakeCall(conn)
    h.service.hello_master(hello, None, 60.0)
    h.run()
    return conn, hello.value["master"], hello.value["base"]


def test_a_backend_is_durable_exactly_when_it_says_so(make_backend: Callable[..., Any]) -> None:
    backend: TaskBackend = make_backend()
    mid, base = backend.add_master(3600.0)
    backend.enqueue(mid, [TaskSpec(base + 1, "m:f", b"x")])
    backend.commit()
    backend.close()
    again = make_backend() if backend.name == "memory" else open_backend(backend.path)  # type: ignore[attr-defined]
    try:
        kept = again.status()["tasks"]["queued"] == 1 and again.store_id == backend.store_id
        assert kept is backend.capabilities.durable
    finally:
        again.close()


def test_a_lost_worker_is_requeued_at_once_exactly_when_the_backend_says_so(h: Harness) -> None:
    [tid] = h.submit(1)
    wid, conn = h.worker()
    assert [t[0] for t in h.exchange(wid).value] == [tid]
    h.drop(conn)
    requeued = h.backend.status()["tasks"]["queued"] == 1
    assert requeued is h.backend.capabilities.instant_requeue


def test_with_group_commit_one_commit_answers_every_call_in_hand(h: Harness) -> None:
    commits: list[int] = []
    real = h.backend.commit

    def counting() -> None:
        commits.append(1)
        real()

    h.backend.commit = counting  # type: ignore[method-assign]  # counted, then done
    conn, mid, base = _remote_master(h)
    commits.clear()
    calls = [FakeCall(conn) for _ in range(5)]
    for i, call in enumerate(calls):  # five calls read in one turn of the loop
        h.service.submit(call, mid, [[base + 1 + i, "m:f", b"x", None]])
    answered_at_once = [c.answered for c in calls]
    h.run()
    assert [c.replies for c in calls] == [[None]] * 5
    if h.backend.capabilities.group_commit:
        assert answered_at_once == [False] * 5  # answered once stored,
        assert len(commits) == 1  # all by one commit
    else:
        assert answered_at_once == [True] * 5


def test_a_full_store_fails_the_calls_in_hand_serves_reads_and_loses_nothing(
    loop: asyncio.AbstractEventLoop, tmp_path: Any
) -> None:
    path = str(tmp_path / "tasks.db")
    backend = open_backend(path)
    h = Harness(loop, backend)
    conn, mid, base = _remote_master(h)
    db = backend._db  # type: ignore[attr-defined]  # the store's own connection
    [(pages,)] = db.execute("PRAGMA page_count").fetchall()
    db.execute(f"PRAGMA max_page_count = {pages + 16}")  # a disk with 16 pages left
    calls = []
    for i in range(40):
        call = FakeCall(conn)
        h.service.submit(call, mid, [[base + 1 + i, "m:f", os.urandom(6000), None]])
        h.run()
        calls.append(call)
    stored = [base + 1 + i for i, c in enumerate(calls) if c.replies == [None]]
    failed = [c.failures[0] for c in calls if c.failures]
    assert stored and failed and len(stored) + len(failed) == 40
    assert all(isinstance(e, StoreError) and "is full (no room left on its disk)" in str(e)
               for e in failed)  # fmt: skip
    status = FakeCall(conn)
    h.service.status(status)  # reads are served
    assert status.value["tasks"]["queued"] == len(stored)
    db.execute("PRAGMA max_page_count = 1073741823")  # room again
    wid, _ = h.worker()
    assert [t[0] for t in h.exchange(wid, want=100).value] == stored
    h.service.close()
    again = open_backend(path)
    try:
        counts = again.status()["tasks"]
        assert counts["queued"] + counts["leased"] == len(stored)  # nothing stored was lost
    finally:
        again.close()


def test_a_reopened_store_keeps_retry_times_dead_letters_and_counts_and_ids_never_repeat(
    loop: asyncio.AbstractEventLoop, tmp_path: Any
) -> None:
    path = str(tmp_path / "tasks.db")
    h = Harness(loop, open_backend(path, max_attempts=1, heartbeat_timeout=60.0))
    conn, mid, base = _remote_master(h)
    retried, poison = base + 1, base + 2
    options = {"retry_on": ["builtins:ConnectionError"], "retries": 2, "backoff": 30.0}
    submit = FakeCall(conn)
    h.service.submit(submit, mid, [[retried, "m:f", b"r", options], [poison, "m:f", b"p", None]])
    h.run()
    assert submit.value is None
    wid, worker_conn = h.worker()
    [task] = h.exchange(wid).value
    h.exchange(wid, [[retried, task[1], RETRY, b"e"]], want=0)  # back in 30 s
    assert [t[0] for t in h.exchange(wid).value] == [poison]
    h.drop(worker_conn)  # it took the worker down: dead-lettered (max_attempts=1)
    before = h.backend.status()["tasks"]
    assert (before["delayed"], before["dead"]) == (1, 1), before
    h.backend.close()  # what a kill -9 leaves: every step above was committed
    again = open_backend(path, max_attempts=1, heartbeat_timeout=60.0)
    try:
        assert again.status()["tasks"] == before  # the counters, and the delayed task
        assert [d.task for d in again.dead_letters()] == [poison]
        assert 25.0 < again.next_due() - time.monotonic() <= 30.0  # the retry's time, kept
        new_mid, _ = again.add_master(0.0)
        joined = again.add_worker(records.WorkerHello.from_wire({"host": "h", "pid": 2}))
        assert new_mid > mid and joined.worker != wid
    finally:
        again.close()


@pytest.mark.parametrize(
    ("report", "said"),
    [
        ("not a list", "a report must be a list of 4 fields"),
        ([1, 1, OK], "a report must be a list of 4 fields"),
        ([None, 1, OK, b"r"], "a task id must be an int"),
        ([True, 1, OK, b"r"], "a task id must be an int"),
        ([0, "1", OK, b"r"], "an attempt must be an int"),
        ([0, 1, "done", b"r"], "unknown status 'done'"),
        ([0, 1, ["ok"], b"r"], "unknown status ['ok']"),
        ([0, 1, OK, "r"], "a result payload must be bytes, not str"),
    ],
)
def test_a_malformed_report_is_refused_and_loses_nothing(
    h: Harness, report: Any, said: str
) -> None:
    [tid] = h.submit(1)
    wid, _ = h.worker()
    [task] = h.exchange(wid).value
    if isinstance(report, list) and len(report) == 4:
        report = [tid if report[0] == 0 else report[0], *report[1:]]
    bad = h.exchange(wid, [report], want=0)
    assert isinstance(bad.failures[0], ValueError)
    assert said in str(bad.failures[0])
    assert h.outcomes() == {}
    h.exchange(wid, [[task[0], task[1], OK, bytearray(b"r")]], want=0)
    assert h.outcomes() == {tid: OK}
    assert h.results == [[tid, OK, b"r"]]


@pytest.mark.parametrize(
    ("task", "said"),
    [
        ([1, "m:f", b"n"], "a task must be a list of 4 fields"),
        ([1.0, "m:f", b"n", None], "a task id must be an int"),
        ([1, b"m:f", b"n", None], "a task's function must be a str"),
        ([1, "m:f", 3, None], "a task's payload must be bytes"),
        ([1, "m:f", b"n", {"retries": -1}], "retries must be 0 or more"),
        ([1, "m:f", b"n", {"colour": 1}], "unknown task option(s): colour"),
    ],
)
def test_a_malformed_task_is_refused(h: Harness, task: list[Any], said: str) -> None:
    conn = FakeConnection()
    hello = FakeCall(conn)
    h.service.hello_master(hello)
    h.run()
    mid, base = hello.value["master"], hello.value["base"]
    if type(task[0]) is int:
        task = [base + task[0], *task[1:]]
    bad = FakeCall(conn)
    h.service.submit(bad, mid, [task])
    assert isinstance(bad.failures[0], ValueError)
    assert said in str(bad.failures[0])
    assert h.backend.status()["tasks"]["queued"] == 0
