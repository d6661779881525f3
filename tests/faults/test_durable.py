"""Durable tasks under real faults: ``distproc serve --store`` killed with ``kill -9`` and
restarted on the same port, workers killed while it is down, tasks that span a
restart, and masters of a store kept in memory that must fail at once, not hang.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dp_taskfns as fns
import pytest
from hub import Hub

import distproc
from distproc.errors import ServiceLostError

from ._procs import AUTHKEY, Proc, free_port, wait_for
from ._stores import DurableService, integrity

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def test_kill_9_of_the_service_at_random_moments_loses_nothing(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    service = DurableService(procs, tmp_path / "tasks.db", "--heartbeat-timeout", "5")
    procs("worker", service.address, "-c", "2").wait_ready()
    count = 3000
    kills = 3
    with distproc.Executor(connect=("127.0.0.1", service.port), authkey=AUTHKEY,
                           reconnect_timeout=120, progress=False) as ex:  # fmt: skip
        done = threading.Event()
        futures: list[concurrent.futures.Future[Any]] = []
        unfinished_at_kill: list[int] = []

        def killer() -> None:
            rng = random.Random()
            for _ in range(kills):
                if done.wait(rng.uniform(0.3, 1.2)):  # a random moment of the run
                    return
                unfinished_at_kill.append(sum(1 for f in futures if not f.done()))
                service.restart()

        thread = threading.Thread(target=killer)
        thread.start()
        futures.extend(ex.submit(fns.slow_square, x, 0.002) for x in range(count))
        try:
            results = [f.result(180) for f in futures]
        finally:
            done.set()
            thread.join(60)
        assert results == [x * x for x in range(count)]
        assert len(unfinished_at_kill) == kills and all(unfinished_at_kill), unfinished_at_kill
        status = service.status()
        counts = status["tasks"]
        assert counts["done"] == count, counts  # each task completed once
        assert (counts["failed"], counts["dead"], counts["queued"], counts["leased"]) == (0,) * 4
        assert status["store"]["backend"] == "sqlite"
    service.stop()
    assert integrity(service.store) == "ok"


def test_a_task_running_across_a_restart_is_accepted_and_runs_once(
    procs: Callable[..., Proc], tmp_path: Path, hub: Hub
) -> None:
    service = DurableService(procs, tmp_path / "tasks.db", "--heartbeat-timeout", "30")
    worker = procs("worker", service.address, "-c", "1")
    worker.wait_ready()
    with distproc.Executor(connect=("127.0.0.1", service.port), authkey=AUTHKEY,
                           reconnect_timeout=60, progress=False) as ex:  # fmt: skip
        future = ex.submit(fns.hold, hub.port, 7)
        _, pid = hub.next_started()
        [before] = service.status()["workers"]
        try:
            service.restart()  # while the task runs on the worker
            wait_for(lambda: not service.status()["workers"][0]["absent"],
                     what="the worker to come back")  # fmt: skip
        finally:
            hub.release()
        assert future.result(60) == 49
        with pytest.raises(queue.Empty):
            hub.next_started(timeout=0.5)  # it ran once: no second start
        [after] = service.status()["workers"]
        assert after["id"] == before["id"] and after["pid"] == pid  # the same identity
        counts = service.status()["tasks"]
        assert counts["done"] == 1 and counts["discarded"] == 0, counts
    service.stop()
    assert integrity(service.store) == "ok"


def test_a_worker_killed_while_the_service_is_down_costs_no_strike(
    procs: Callable[..., Proc], tmp_path: Path, hub: Hub
) -> None:
    service = DurableService(procs, tmp_path / "tasks.db", "--heartbeat-timeout", "2",
                             "--max-attempts", "1")  # fmt: skip
    first = procs("worker", service.address, "-c", "1")
    first.wait_ready()
    with distproc.Executor(connect=("127.0.0.1", service.port), authkey=AUTHKEY,
                           reconnect_timeout=60, progress=False) as ex:  # fmt: skip
        future = ex.submit(fns.hold, hub.port, 3)
        _, pid = hub.next_started()
        service.kill()
        os.kill(pid, signal.SIGKILL)  # the worker process dies while the service is down
        first.popen.send_signal(signal.SIGKILL)
        first.popen.wait(30)
        service.start()
        second = procs("worker", service.address, "-c", "1")
        second.wait_ready()
        # After heartbeat_timeout the dead worker's lease returns, with no strike
        # (max_attempts=1 would dead-letter the task at its first strike).
        _, again = hub.next_started(timeout=60)
        assert again != pid
        hub.release()
        assert future.result(60) == 9
        counts = service.status()["tasks"]
        assert counts["dead"] == 0 and counts["done"] == 1, counts
    service.stop()


def test_a_master_of_a_memory_store_fails_at_once_when_it_restarts(
    procs: Callable[..., Proc], hub: Hub
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    service = procs("serve", "--address", address)
    service.wait_ready()
    procs("worker", address, "-c", "1").wait_ready()
    ex = distproc.Executor(connect=("127.0.0.1", port), authkey=AUTHKEY, progress=False)
    try:
        pending = [ex.submit(fns.hold, hub.port, x) for x in range(3)]
        hub.next_started()
        service.popen.send_signal(signal.SIGKILL)
        service.popen.wait(30)
        procs("serve", "--address", address).wait_ready()
        for future in pending:
            with pytest.raises(ServiceLostError, match="came back without this master's tasks"):
                future.result(60)
        started = time.monotonic()
        with pytest.raises(ServiceLostError):
            ex.submit(fns.square, 2)  # every later call fails at once
        assert time.monotonic() - started < 5
    finally:
        hub.release()
        started = time.monotonic()
        ex.shutdown(wait=True)  # returns: nothing is left to wait for
        assert time.monotonic() - started < 30


def test_a_master_whose_service_never_comes_back_fails_after_its_reconnect_time(
    procs: Callable[..., Proc], hub: Hub
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    service = procs("serve", "--address", address)
    service.wait_ready()
    procs("worker", address, "-c", "1").wait_ready()
    with distproc.Executor(connect=("127.0.0.1", port), authkey=AUTHKEY, reconnect_timeout=2,
                           progress=False) as ex:  # fmt: skip
        future = ex.submit(fns.hold, hub.port, 1)
        hub.next_started()
        service.popen.send_signal(signal.SIGKILL)
        service.popen.wait(30)
        with pytest.raises(ServiceLostError, match="did not come back within 2 s"):
            future.result(60)
        with pytest.raises(ServiceLostError):
            ex.submit(fns.square, 2)
        hub.release()


def test_after_sigstop_a_worker_slot_registers_once(
    procs: Callable[..., Proc], hub: Hub
) -> None:
    port = free_port()
    with distproc.Executor(address=("127.0.0.1", port), authkey=AUTHKEY, heartbeat_timeout=3.0,
                           progress=False) as ex:  # fmt: skip
        procs("worker", f"127.0.0.1:{port}", "-c", "1").wait_ready()
        future = ex.submit(fns.hold, hub.port, 5)
        _, pid = hub.next_started()

        def entries() -> list[dict[str, Any]]:
            return [w for w in ex.status()["workers"] if w["pid"] == pid]

        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: not entries(), timeout=60, what="the stopped worker to be lost")
        finally:
            os.kill(pid, signal.SIGCONT)
        hub.release()  # its late result is discarded; the task runs again
        assert future.result(60) == 25
        wait_for(lambda: bool(entries()), timeout=60, what="the worker to join again")
        # Its threads all find out that it was forgotten: it joins once, not once each.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert len(entries()) == 1, entries()
        assert list(ex.map(fns.square, range(20))) == [x * x for x in range(20)]
        assert len(entries()) == 1, entries()


def test_a_worker_stopped_shorter_than_the_heartbeat_timeout_keeps_its_lease(
    procs: Callable[..., Proc], hub: Hub
) -> None:
    port = free_port()
    with distproc.Executor(address=("127.0.0.1", port), authkey=AUTHKEY,
                           heartbeat_timeout=10.0, progress=False) as ex:  # fmt: skip
        procs("worker", f"127.0.0.1:{port}", "-c", "1").wait_ready()
        future = ex.submit(fns.hold, hub.port, 6)
        _, pid = hub.next_started()
        [before] = ex.status()["workers"]
        os.kill(pid, signal.SIGSTOP)
        threading.Event().wait(2.0)  # the fault itself: stopped for 2 s of the 10 allowed
        os.kill(pid, signal.SIGCONT)
        hub.release()
        assert future.result(60) == 36
        [after] = ex.status()["workers"]
        assert after["id"] == before["id"]
        assert ex.status()["tasks"]["discarded"] == 0
        with pytest.raises(queue.Empty):
            hub.next_started(timeout=0.5)  # it ran once


def test_results_wait_for_a_master_that_comes_back(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    """Outcomes are kept until the master confirms them, across the service's restart."""
    service = DurableService(procs, tmp_path / "tasks.db")
    with distproc.Executor(connect=("127.0.0.1", service.port), authkey=AUTHKEY,
                           reconnect_timeout=60, progress=False) as ex:  # fmt: skip
        futures = [ex.submit(fns.square, x) for x in range(200)]
        service.restart()  # no worker yet: every task is queued in the file
        procs("worker", service.address, "-c", "2").wait_ready()
        assert [f.result(60) for f in futures] == [x * x for x in range(200)]
        assert concurrent.futures.wait(futures, 0)[1] == set()
    service.stop()
