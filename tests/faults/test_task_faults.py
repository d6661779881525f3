"""The task system under real faults: kill -9, SIGSTOP, tasks that exit, restarts.

Workers are real processes (an Executor's own, or ``distproc worker``
subprocesses); tasks report where they run through a :class:`hub.Hub` and
block until the test releases them, so each test knows which process to hit.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import dp_taskfns as fns
import pytest
from hub import Hub

import distproc
from distproc.errors import WorkerLostError

from ._procs import AUTHKEY, Proc, free_port, wait_for

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------------------- tests
@pytest.mark.slow
def test_kill_9_of_a_worker_mid_task_loses_nothing(hub: Hub) -> None:
    with distproc.Executor(workers=2, progress=False) as ex:
        futures = [ex.submit(fns.hold, hub.port, x) for x in range(20)]
        _, pid = hub.next_started()
        os.kill(pid, signal.SIGKILL)
        hub.release()
        assert [f.result(60) for f in futures] == [x * x for x in range(20)]
        status = ex.status()
        assert status["tasks"]["done"] == 20  # each task completed once
        assert status["tasks"]["dead"] == 0
        wait_for(lambda: len(ex.status()["workers"]) == 2, what="a replacement worker")


@pytest.mark.slow
def test_sigstop_past_the_heartbeat_timeout_moves_tasks_and_discards_late_results(
    hub: Hub,
) -> None:
    with distproc.Executor(workers=2, heartbeat_timeout=1.0, progress=False) as ex:
        future = ex.submit(fns.hold, hub.port, 7)
        _, stopped = hub.next_started()
        os.kill(stopped, signal.SIGSTOP)
        try:
            # The service gives the task to the other worker once the stopped one
            # misses its heartbeats; there it starts again.
            _, again = hub.next_started(timeout=30)
            assert again != stopped
            hub.release()  # both runs may finish now; only one result counts
            assert future.result(60) == 49
        finally:
            os.kill(stopped, signal.SIGCONT)
        wait_for(lambda: ex.status()["tasks"]["discarded"] >= 1, what="the late result")
        status = ex.status()
        assert status["tasks"]["done"] == 1
        # The stopped worker joined again and serves.
        wait_for(lambda: len(ex.status()["workers"]) == 2, what="the worker to rejoin")
        assert list(ex.map(fns.square, range(10))) == [x * x for x in range(10)]


@pytest.mark.slow
def test_a_task_that_exits_is_dead_lettered_and_the_fleet_goes_on() -> None:
    with distproc.Executor(workers=2, max_attempts=3, progress=False) as ex:
        poison = ex.submit(fns.die, 1)
        with pytest.raises(WorkerLostError) as info:
            poison.result(90)
        assert len(info.value.attempts) == 3
        assert all("connection lost" in how for _, how in info.value.attempts)
        assert "took down 3 worker(s)" in str(info.value)
        assert list(ex.map(fns.square, range(20))) == [x * x for x in range(20)]
        status = ex.status()
        assert status["tasks"]["dead"] == 1
        assert [d["function"] for d in status["dead_letters"]] == ["dp_taskfns:die"]


@pytest.mark.slow
def test_a_poison_call_in_a_map_fails_alone() -> None:
    with distproc.Executor(workers=2, max_attempts=3, progress=False) as ex:
        out = list(ex.map(fns.die_on, range(40), [13] * 40, return_exceptions=True))
        assert isinstance(out[13], WorkerLostError)
        assert out[:13] + out[14:] == [x * x for x in range(40) if x != 13]
        assert ex.status()["tasks"]["dead"] == 1


@pytest.mark.slow
def test_master_shutdown_while_workers_are_busy(hub: Hub, procs: Callable[..., Proc]) -> None:
    port = free_port()
    ex = distproc.Executor(address=("127.0.0.1", port), authkey=AUTHKEY, progress=False)
    worker = procs("worker", f"127.0.0.1:{port}", "-c", "2")
    worker.wait_ready()
    futures = [ex.submit(fns.hold, hub.port, x) for x in range(4)]
    hub.next_started()
    ex.shutdown(wait=False, cancel_futures=True)  # returns without waiting for the workers
    assert all(f.done() for f in futures)
    hub.release()
    # The worker waits for a service again (documented): a new master on the
    # same address gets its tasks done.
    assert worker.popen.poll() is None
    with distproc.Executor(address=("127.0.0.1", port), authkey=AUTHKEY, progress=False) as ex2:
        assert list(ex2.map(fns.square, range(10))) == [x * x for x in range(10)]


@pytest.mark.slow
def test_workers_reconnect_after_the_service_restarts(procs: Callable[..., Proc]) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    service = procs("serve", "--address", address)
    service.wait_ready()
    worker = procs("worker", address, "-c", "1")
    worker.wait_ready()
    with distproc.Executor(connect=("127.0.0.1", port), authkey=AUTHKEY, progress=False) as ex:
        assert list(ex.map(fns.square, range(5))) == [x * x for x in range(5)]
    service.popen.send_signal(signal.SIGKILL)
    service.popen.wait(30)
    service = procs("serve", "--address", address)
    service.wait_ready()
    with distproc.Executor(connect=("127.0.0.1", port), authkey=AUTHKEY, progress=False) as ex:
        assert list(ex.map(fns.square, range(5))) == [x * x for x in range(5)]
        assert len(ex.status()["workers"]) == 1
    assert worker.popen.poll() is None


@pytest.mark.slow
def test_sigterm_lets_running_tasks_finish_and_hands_back_the_rest(
    hub: Hub, procs: Callable[..., Proc]
) -> None:
    port = free_port()
    with distproc.Executor(address=("127.0.0.1", port), authkey=AUTHKEY, progress=False) as ex:
        first = procs("worker", f"127.0.0.1:{port}", "-c", "1")
        first.wait_ready()
        futures = [ex.submit(fns.hold, hub.port, x) for x in range(6)]
        hub.next_started()
        first.popen.send_signal(signal.SIGTERM)
        wait_for(lambda: any(w["leaving"] for w in ex.status()["workers"]), what="the goodbye")
        hub.release()  # the running task finishes on the stopping worker
        assert first.popen.wait(60) == 0
        second = procs("worker", f"127.0.0.1:{port}", "-c", "1")
        second.wait_ready()
        assert [f.result(60) for f in futures] == [x * x for x in range(6)]
        assert ex.status()["tasks"]["dead"] == 0


@pytest.mark.slow
def test_two_masters_share_one_service(procs: Callable[..., Proc]) -> None:
    port = free_port()
    service = procs("serve", "--address", f"127.0.0.1:{port}")
    service.wait_ready()
    procs("worker", f"127.0.0.1:{port}", "-c", "2").wait_ready()
    with (
        distproc.Executor(connect=("127.0.0.1", port), authkey=AUTHKEY, progress=False) as a,
        distproc.Executor(connect=("127.0.0.1", port), authkey=AUTHKEY, progress=False) as b,
    ):
        fa = [a.submit(fns.add, x, 1) for x in range(50)]
        fb = [b.submit(fns.add, x, 2) for x in range(50)]
        assert [f.result(60) for f in fa] == [x + 1 for x in range(50)]
        assert [f.result(60) for f in fb] == [x + 2 for x in range(50)]
        assert a.status()["masters"] == 2


@pytest.mark.parametrize("mode", [[], ["--threads"]])
def test_a_second_sigterm_stops_a_worker_at_once(
    hub: Hub, procs: Callable[..., Proc], mode: list[str]
) -> None:
    port = free_port()
    with distproc.Executor(address=("127.0.0.1", port), authkey=AUTHKEY, progress=False) as ex:
        worker = procs("-v", "worker", f"127.0.0.1:{port}", "-c", "1", *mode)
        worker.wait_ready()
        future = ex.submit(fns.hold, hub.port, 1)
        hub.next_started()  # the task runs, held: a graceful stop would wait for it
        worker.popen.send_signal(signal.SIGTERM)
        worker.wait_line("stopping")  # the first one was handled; now the second
        worker.popen.send_signal(signal.SIGTERM)
        assert worker.finish(timeout=30) in (0, 128 + signal.SIGTERM), worker.text
        assert not future.done()  # stopped at once: the task was not waited for
        hub.release()
        ex.shutdown(wait=False, cancel_futures=True)


@pytest.mark.slow
def test_a_slot_holds_the_next_task_while_it_runs_one(hub: Hub) -> None:
    # Tasks that take longer than a slot's prefetch (here: held by the hub) still
    # have the next one at hand when one ends, instead of a round trip between them,
    # once the slot has seen a task end (0.3 s: a prefetch of one task).
    with distproc.Executor(workers=1, progress=False) as ex:
        assert ex.submit(fns.slow_square, 3, 0.3).result(30) == 9
        futures = [ex.submit(fns.hold, hub.port, x) for x in range(3)]
        assert hub.next_started()[0] == 0

        def leased() -> int:
            [worker] = ex.status()["workers"]
            return int(worker["leased"])

        try:
            wait_for(lambda: leased() == 2, what="the next task prefetched")
        finally:
            hub.release()
        assert [f.result(30) for f in futures] == [0, 1, 4]
