"""The Redis backend's transitions, called directly as masters and workers call them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from faults._procs import wait_for

from distproc.tasks.backends.redis_backend import RedisBackend
from distproc.tasks.records import (
    DEFAULT_OPTIONS,
    OK,
    Lease,
    Report,
    TaskOptions,
    TaskSpec,
    WorkerHello,
)

from .conftest import RedisServer


@pytest.fixture
def backends(redis_server: RedisServer) -> Iterator[Callable[..., RedisBackend]]:
    made: list[RedisBackend] = []

    def make(**options: float) -> RedisBackend:
        backend = RedisBackend(redis_server.url, "q", **options)  # type: ignore[arg-type]
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def _submit(master: RedisBackend, count: int = 1, options: TaskOptions = DEFAULT_OPTIONS
            ) -> tuple[int, list[int]]:  # fmt: skip
    mid, base = master.add_master()
    tids = [base + 1 + i for i in range(count)]
    master.enqueue(mid, [TaskSpec(t, "m:f", b"x", options) for t in tids])
    return mid, tids


def _join(backend: RedisBackend, pid: int) -> str:
    return backend.add_worker(WorkerHello(host="h", pid=pid)).worker


def test_the_capabilities_say_what_differs_from_the_service() -> None:
    caps = RedisBackend.capabilities
    assert not caps.via_service and caps.multi_host and not caps.instant_requeue


def test_a_silent_lease_is_reclaimed_only_after_the_heartbeat_timeout_and_fenced(
    backends: Callable[..., RedisBackend],
) -> None:
    master = backends(heartbeat_timeout=60.0)
    mid, [tid] = _submit(master)
    a, b = backends(), backends()
    wa, wb = _join(a, 1), _join(b, 2)
    [lease] = a.lease(wa, 1)
    assert b.lease(wb, 1) == []  # not instant: the lease is young
    master.r.hset(master.key["config"], "heartbeat_timeout", "0.2")  # a master's setting
    [again] = _until_leased(b, wb)
    assert again.task == tid and again.attempt == lease.attempt + 1
    a.report(wa, [Report(tid, lease.attempt, OK, b"late")])  # the old token: discarded
    b.report(wb, [Report(tid, again.attempt, OK, b"on time")])
    outcomes = master.outcomes(mid, 0, 10)
    assert [(o.task, o.payload) for o in outcomes] == [(tid, b"on time")]
    tasks = master.status()["tasks"]
    assert tasks["discarded"] == 1 and tasks["done"] == 1 and tasks["reclaimed"] == 1


def _until_leased(backend: RedisBackend, wid: str) -> list[Lease]:
    got: list[Lease] = []

    def leased() -> bool:
        got.extend(backend.lease(wid, 1))
        return bool(got)

    wait_for(leased, what=f"a lease for {wid}")
    return got


def _idle(backend: RedisBackend, wid: str) -> float:
    [entry] = backend.r.xpending_range(backend.key["stream"], "workers", "-", "+", 1, wid)
    return float(entry["time_since_delivered"]) / 1000


def test_a_renewed_lease_is_not_reclaimed(backends: Callable[..., RedisBackend]) -> None:
    master = backends(heartbeat_timeout=0.3)
    _submit(master)
    a, b = backends(), backends()
    wa, wb = _join(a, 1), _join(b, 2)
    [lease] = a.lease(wa, 1)
    for _ in range(5):  # five times two thirds of the timeout, renewed each time
        wait_for(lambda: _idle(a, wa) >= 0.2, what="two thirds of the timeout")
        assert a.renew(wa) == 1
        assert _idle(a, wa) < 0.2
        assert b.lease(wb, 1) == []
    a.report(wa, [Report(lease.task, lease.attempt, OK, b"r")])
    assert master.status()["tasks"]["reclaimed"] == 0


def test_a_task_reclaimed_max_attempts_times_is_a_dead_letter(
    backends: Callable[..., RedisBackend],
) -> None:
    master = backends(heartbeat_timeout=0.05, max_attempts=2)
    mid, [tid] = _submit(master)
    workers = [backends() for _ in range(3)]
    wids = [_join(w, i) for i, w in enumerate(workers)]
    assert len(workers[0].lease(wids[0], 1)) == 1
    _until_leased(workers[1], wids[1])  # one strike: the first worker held only it
    # The second strike: the third worker's reclaim dead-letters it (and leases nothing).
    wait_for(lambda: not workers[2].lease(wids[2], 1) and master.status()["tasks"]["dead"] == 1,
             what="the dead letter")  # fmt: skip
    [letter] = master.dead_letters()
    assert letter.task == tid and "took down 2 worker(s)" in letter.reason
    [outcome] = master.outcomes(mid, 0, 10)
    assert outcome.status == "lost" and "took down 2" in outcome.payload["reason"]
    assert master.requeue_dead([tid]) == [tid] and master.dead_letters() == []


def test_a_batch_sent_twice_is_queued_once(backends: Callable[..., RedisBackend]) -> None:
    master = backends()
    mid, tids = _submit(master, 3)
    master.enqueue(mid, [TaskSpec(t, "m:f", b"x") for t in tids])  # the resend after a drop
    assert master.status()["tasks"]["queued"] == 3


def test_without_the_extra_the_import_names_the_pip_install() -> None:
    code = ("import sys; sys.modules['redis'] = None\n"
            "import distproc.tasks.backends.redis_backend")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert "pip install 'distproc[redis]'" in out.stderr.splitlines()[-1]
