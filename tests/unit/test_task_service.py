"""The task service's state machine, driven directly on an event loop with stand-in calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from distproc.tasks import service as service_module
from distproc.tasks.service import ERROR, LOST, OK, RETRY, UNAVAILABLE, TaskService


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
    def __init__(self, loop: asyncio.AbstractEventLoop, **options: Any) -> None:
        self.loop = loop
        self.service = TaskService(loop, **options)
        self.results: list[list[Any]] = []
        self.mid, self.base = self.service.add_master(self.results.extend)
        self.next_id = self.base + 1

    def run(self, seconds: float = 0.0) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def submit(self, count: int, **opts: Any) -> list[int]:
        tids = list(range(self.next_id, self.next_id + count))
        self.next_id += count
        self.service.add_tasks(self.mid, [[t, "m:f", b"n", opts or None] for t in tids])
        return tids

    def worker(self, slots: int = 1) -> tuple[str, FakeConnection]:
        conn = FakeConnection()
        call = FakeCall(conn)
        self.service.hello_worker(call, {"host": "h", "pid": 1, "slots": slots})
        return call.value["worker"], conn

    def exchange(
        self, wid: str, results: list[Any] | None = None, want: int = 1, wait: float = 0.0
    ) -> FakeCall:
        call = FakeCall(FakeConnection())
        self.service.exchange(call, wid, results or [], want, wait)
        return call

    def outcomes(self) -> dict[int, str]:
        self.run()
        return {tid: status for tid, status, _ in self.results}


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def h(loop: asyncio.AbstractEventLoop) -> Iterator[Harness]:
    harness = Harness(loop, max_attempts=3, heartbeat_timeout=60.0)
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
    assert h.service.counts["discarded"] == 3


def test_a_dropped_connection_requeues_its_leases_at_once(h: Harness) -> None:
    [tid] = h.submit(1)
    a, conn_a = h.worker()
    b, _ = h.worker()
    [task] = h.exchange(a).value
    waiting = h.exchange(b, wait=30)
    assert not waiting.answered
    conn_a.drop()
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
        conn.drop()
    assert h.outcomes() == {tid: LOST}
    [(_, _, info)] = h.results
    assert len(info["attempts"]) == 3
    assert "took down 3 worker(s)" in info["reason"]
    assert h.service.__distproc_status__()["tasks"]["dead"] == 1


def test_a_worker_lost_with_a_batch_makes_suspects_that_run_alone(h: Harness) -> None:
    tids = h.submit(4)
    a, conn_a = h.worker()
    assert len(h.exchange(a, want=4).value) == 4
    conn_a.drop()  # which of the four did it? none gets a strike
    b, conn_b = h.worker()
    first = h.exchange(b, want=4).value
    assert [t[0] for t in first] == [tids[0]]  # a suspect runs alone
    conn_b.drop()  # now it is certain
    c, _ = h.worker()
    again = h.exchange(c, want=4).value
    assert [t[0] for t in again] == [tids[0]]
    status = h.service.tasks[tids[0]]
    assert status.strikes == 1 and len(status.history) == 2
    assert h.outcomes() == {}


def test_missed_heartbeats_cost_the_leases(loop: asyncio.AbstractEventLoop) -> None:
    h = Harness(loop, heartbeat_timeout=0.2)
    try:
        [tid] = h.submit(1)
        wid, _ = h.worker()
        [task] = h.exchange(wid).value
        h.run(0.6)
        assert wid not in h.service.workers
        assert list(h.service.ready) == [tid]
        late = h.exchange(wid, [[tid, task[1], OK, b"late"]])
        assert late.value is None  # "join again"
        assert h.service.counts["discarded"] == 1
    finally:
        h.service.close()


def test_an_idle_worker_makes_a_hoarder_give_back_unstarted_tasks(h: Harness) -> None:
    tids = h.submit(10)
    a, _ = h.worker()
    assert len(h.exchange(a, want=10).value) == 10
    heartbeat = FakeCall(FakeConnection())
    h.service.heartbeat(heartbeat, a, 30.0)
    assert not heartbeat.answered
    b, _ = h.worker()
    waiting = h.exchange(b, want=5, wait=30)
    assert heartbeat.value == {"give_back": 5}  # a holds 9 beyond its one slot
    h.service.give_back(FakeCall(FakeConnection()), a, tids[5:])
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
    h.service.drop_master(h.mid)
    h.exchange(wid, [[tids[2], 1, OK, b"r"]], want=0)
    assert h.results == []  # its master is gone


def test_a_remote_master_collects_results_by_long_poll(h: Harness) -> None:
    conn = FakeConnection()
    hello = FakeCall(conn)
    h.service.hello_master(hello)
    mid, base = hello.value["master"], hello.value["base"]
    submit = FakeCall(conn)
    h.service.submit(submit, mid, [[base + 1, "m:f", b"n", None]])
    assert submit.value is None
    poll = FakeCall(conn)
    h.service.results(poll, mid, 100, 30.0)
    assert not poll.answered
    wid, _ = h.worker()
    [task] = h.exchange(wid).value
    h.exchange(wid, [[task[0], task[1], OK, b"r"]], want=0)
    assert poll.value == [[base + 1, OK, b"r"]]
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
    assert service.tasks[tids[0]].strikes == 0 and not service.tasks[tids[0]].history
    assert list(service.ready)[:1] == [tids[0]]  # at the front, in its place
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
    monkeypatch.setattr(service_module, "UNAVAILABLE_GRACE", 0.05)
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
    monkeypatch.setattr(service_module, "UNAVAILABLE_GRACE", 0.1)
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
    heartbeat = FakeCall(FakeConnection())
    h.service.heartbeat(heartbeat, wid, 30.0)
    assert not waiting.answered and not heartbeat.answered
    h.service.goodbye(FakeCall(FakeConnection()), wid, [])
    # Not at the end of their 30 s: the worker can stop now.
    assert waiting.value == [] and heartbeat.value == {}


def test_a_lease_holds_a_bounded_number_of_bytes(h: Harness) -> None:
    big = b"n" + b"x" * (service_module.BATCH_BYTES // 2)
    tids = list(range(h.next_id, h.next_id + 4))
    h.next_id += 4
    h.service.add_tasks(h.mid, [[t, "m:f", big, None] for t in tids])
    wid, _ = h.worker()
    assert len(h.exchange(wid, want=4).value) == 2


def test_when_the_last_worker_that_could_import_it_leaves_its_tasks_fail(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "UNAVAILABLE_GRACE", 0.05)
    tids = h.submit(2)
    bad, _ = h.worker()
    _, good_conn = h.worker()
    [task] = h.exchange(bad).value
    h.exchange(bad, [[task[0], task[1], UNAVAILABLE, b"ImportError: x"]], want=0)
    h.run(0.2)
    assert h.outcomes() == {}  # the good worker may still run them
    good_conn.drop()
    h.run(0.2)
    assert h.outcomes() == dict.fromkeys(tids, UNAVAILABLE)
    assert h.results[0][2]["workers"] == [[f"{bad} (h pid 1)", "ImportError: x"]]
