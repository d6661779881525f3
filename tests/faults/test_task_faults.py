"""The task system under real faults: kill -9, SIGSTOP, tasks that exit, restarts.

Workers are real processes (an Executor's own, or ``distproc worker``
subprocesses); tasks report where they run through a :class:`hub.Hub` and
block until the test releases them, so each test knows which process to hit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dp_taskfns as fns
import pytest
from hub import Hub

import distproc
from distproc.errors import WorkerLostError

pytestmark = pytest.mark.timeout(120)

AUTHKEY = b"task-fault-authkey"
TASKFNS = Path(fns.__file__).parent


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Wait until ``predicate()`` holds, checking on a short interval (state read over the wire)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        threading.Event().wait(0.02)


@pytest.fixture
def hub() -> Iterator[Hub]:
    with Hub() as running:
        yield running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Proc:
    """A ``distproc`` subprocess (serve or worker), stopped at the end of the test."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, DISTPROC_AUTHKEY=AUTHKEY.decode())
        env["PYTHONPATH"] = os.pathsep.join([str(TASKFNS), *sys.path])
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "distproc", *args],
            env=env,
            cwd=TASKFNS,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line)
            if "serving" in line or "worker with" in line:
                self._listening.set()

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self._listening.wait(timeout), "".join(self.lines)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(30)
        self._reader.join(10)
        assert self.popen.stderr is not None
        self.popen.stderr.close()


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(*args: str) -> Proc:
        proc = Proc(*args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


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
