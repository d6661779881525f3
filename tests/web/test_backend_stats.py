"""The stats the dashboard and ``/metrics`` read from a task backend, memory and SQLite:
lease expiries, task durations, heartbeats, and the workers that went with how each ended."""

from __future__ import annotations

from pathlib import Path

import pytest
from shared_fixtures import wait_until

from distproc.tasks.backends.base import DURATION_BUCKETS, TaskBackend
from distproc.tasks.backends.memory import MemoryBackend
from distproc.tasks.backends.sqlite import SqliteBackend
from distproc.tasks.records import OK, Report, TaskSpec, WorkerHello


def open_backend(kind: str, tmp_path: Path) -> TaskBackend:
    if kind == "sqlite":
        return SqliteBackend(path=str(tmp_path / "tasks.db"), max_attempts=1,
                             heartbeat_timeout=0.05)  # fmt: skip
    return MemoryBackend(max_attempts=1, heartbeat_timeout=0.05)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_backend_counts_expired_leases_and_durations_and_keeps_gone_workers(
    kind: str, tmp_path: Path
) -> None:
    backend = open_backend(kind, tmp_path)
    try:
        mid, base = backend.add_master(0.0)
        backend.enqueue(mid, [TaskSpec(base + 1, "m:f", b""), TaskSpec(base + 2, "m:f", b"")])
        quits = backend.add_worker(WorkerHello(host="h", pid=11)).worker
        silent = backend.add_worker(WorkerHello(host="h", pid=12)).worker
        [first] = backend.lease(quits, 1)
        assert len(backend.lease(silent, 1)) == 1
        backend.report(quits, [Report(first.task, first.attempt, OK, b"")])
        backend.leave(quits, [])
        backend.lose_worker(quits, "connection lost")
        backend.commit()
        [row] = backend.status()["workers"]
        assert row["id"] == silent and row["heartbeat_ago"] >= 0.0

        def expired() -> bool:
            backend.expire()  # what the service does when next_due() comes
            return backend.worker_count() == 0

        wait_until(expired, "the silent worker's lease to expire", timeout=10)
        backend.commit()
        status = backend.status()
    finally:
        backend.close()
    assert status["tasks"]["lease_expired"] == 1
    assert status["tasks"]["dead"] == 1  # max_attempts=1: the silent worker's task
    assert [(g["pid"], g["ended"]) for g in status["gone_workers"]] == [
        (11, "left"), (12, "no heartbeat for 0.05 s")]  # fmt: skip
    durations = status["durations"]
    assert durations["count"] == 1 and 0.0 <= durations["sum"] < 60.0
    bounds = [b for b, _ in durations["buckets"]]
    assert bounds == [*DURATION_BUCKETS, "+Inf"]
    assert durations["buckets"][-1][1] == 1


def test_a_store_keeps_the_lease_expiries_across_a_restart(tmp_path: Path) -> None:
    backend = open_backend("sqlite", tmp_path)
    try:
        mid, base = backend.add_master(60.0)
        backend.enqueue(mid, [TaskSpec(base + 1, "m:f", b"")])
        wid = backend.add_worker(WorkerHello(host="h", pid=13)).worker
        backend.lease(wid, 1)

        def expired() -> bool:
            backend.expire()
            return backend.worker_count() == 0

        wait_until(expired, "the lease to expire", timeout=10)
        backend.commit()
    finally:
        backend.close()
    again = open_backend("sqlite", tmp_path)
    try:
        assert again.status()["tasks"]["lease_expired"] == 1
    finally:
        again.close()
