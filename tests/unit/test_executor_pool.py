"""``distproc.Executor`` in place of ``concurrent.futures.ProcessPoolExecutor``.

Each test does what code written for the stdlib's pool does, with
``distproc.Executor`` in its place: its arguments and checks, initializers
(in local and remote worker processes, and one that fails),
``max_tasks_per_child``, ``shutdown(cancel_futures=True)``, ``running()``,
bound methods as tasks, and no reference kept to a result once it is handed
over.  CPython's own executor tests run in ``tests/interop/conformance``.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import weakref
from concurrent.futures.process import BrokenProcessPool

import dp_poolfns as pf
import dp_taskfns as fns
import pytest
from shared_fixtures import wait_until

import distproc

pytestmark = pytest.mark.slow


def test_the_stdlib_checks_and_messages() -> None:
    with pytest.raises(ValueError, match=r"^max_workers must be greater than 0$"):
        distproc.Executor(max_workers=0)
    with pytest.raises(ValueError, match=r"^max_workers must be greater than 0$"):
        distproc.Executor(-1)  # positional, as ProcessPoolExecutor(-1)
    with pytest.raises(TypeError, match=r"^initializer must be a callable$"):
        distproc.Executor(1, initializer="pf.remember")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^max_tasks_per_child must be an integer$"):
        distproc.Executor(1, max_tasks_per_child=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^max_tasks_per_child must be >= 1$"):
        distproc.Executor(1, max_tasks_per_child=0)
    with pytest.raises(ValueError, match="not both"):
        distproc.Executor(workers=1, max_workers=2)
    with pytest.raises(ValueError, match="connect="):
        distproc.Executor(connect=("127.0.0.1", 1), initializer=pf.remember)
    # initargs that the native codec cannot carry: refused before anything starts.
    threads = threading.active_count()
    with pytest.raises(TypeError, match="native codec"):
        distproc.Executor(1, initializer=pf.remember, initargs=(object(),))
    assert threading.active_count() == threads


def test_max_workers_positional_and_by_name() -> None:
    with distproc.Executor(2, serializer="pickle") as ex:
        assert ex._fleet is not None and ex._fleet.count == 2
        assert ex.submit(fns.square, 7).result(60) == 49
    with distproc.Executor(max_workers=1, mp_context=None) as ex:
        assert ex._fleet is not None and ex._fleet.count == 1
        assert list(ex.map(fns.square, range(4))) == [0, 1, 4, 9]


def test_no_arguments_is_a_pool_of_a_worker_per_cpu() -> None:
    cpus = getattr(os, "process_cpu_count", os.cpu_count)() or 1
    with distproc.Executor() as ex:
        assert ex._fleet is not None and ex._fleet.count == cpus
        assert ex.submit(fns.square, 3).result(60) == 9


def test_initializer_runs_in_each_local_worker_before_its_tasks() -> None:
    with distproc.Executor(max_workers=2, initializer=pf.remember, initargs=("ready",)) as ex:
        pids = set(ex._fleet.pids() if ex._fleet else [])
        assert len(pids) == 2  # the pool is ready when the constructor returns
        seen = [f.result(60) for f in [ex.submit(pf.state) for _ in range(20)]]
    assert {value for value, _ in seen} == {"ready"}
    assert {pid for _, pid in seen} <= pids


def test_initializer_runs_in_a_remote_worker() -> None:
    with distproc.Executor(address=("127.0.0.1", 0), initializer=pf.remember,
                           initargs=("remote",)) as ex:  # fmt: skip
        assert ex.address is not None
        env = {**os.environ, "DISTPROC_AUTHKEY": ex.authkey.decode(),
               "PYTHONPATH": os.pathsep.join(sys.path)}  # fmt: skip
        worker = subprocess.Popen(
            [sys.executable, "-m", "distproc", "worker", f"127.0.0.1:{ex.address[1]}", "-c", "1"],
            env=env,
        )
        try:
            value, pid = ex.submit(pf.state).result(60)
        finally:
            worker.terminate()
            worker.wait(30)
    assert value == "remote" and pid != os.getpid()


def test_a_failing_initializer_breaks_the_pool(caplog: pytest.LogCaptureFixture) -> None:
    ex = distproc.Executor(max_workers=2, initializer=pf.refuse, initargs=("no disk",))
    try:
        try:
            future = ex.submit(pf.state)
        except BrokenProcessPool:
            pass  # broken already
        else:
            with pytest.raises(BrokenProcessPool, match="ValueError: initializer refused: no disk"):
                future.result(60)
        wait_until(lambda: ex._broken is not None, "the pool never broke", timeout=60)
        with pytest.raises(BrokenProcessPool):
            ex.submit(pf.state)
    finally:
        ex.shutdown()
    assert any("initializer refused: no disk" in r.getMessage() for r in caplog.records
               if r.name == "concurrent.futures" and r.levelname == "CRITICAL")  # fmt: skip


def test_max_tasks_per_child_gives_each_task_a_fresh_process() -> None:
    with distproc.Executor(max_workers=1, max_tasks_per_child=1) as ex:
        pids = [ex.submit(fns.pid).result(60) for _ in range(3)]
    assert len(set(pids)) == 3


def test_shutdown_cancel_futures_cancels_queued_tasks_and_lets_running_ones_finish() -> None:
    from dp_taskfns import hold
    from hub import Hub

    with Hub() as hub:
        ex = distproc.Executor(workers=1, progress=False)
        futures = [ex.submit(hold, hub.port, x) for x in range(20)]
        x, _ = hub.next_started()
        assert futures[x].running()  # leased: running, as the stdlib's once handed over
        assert not futures[x].cancel()
        stopping = threading.Thread(target=ex.shutdown, kwargs={"cancel_futures": True})
        stopping.start()
        wait_until(lambda: sum(f.cancelled() for f in futures) >= 18, "nothing was cancelled")
        hub.release()
        stopping.join(60)
        assert not stopping.is_alive()
        assert futures[x].result(0) == x * x
        finished = [f for f in futures if not f.cancelled()]
        assert all(f.result(0) == futures.index(f) ** 2 for f in finished)
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.submit(fns.square, 1)


def test_a_bound_method_runs_with_its_object_and_is_not_kept() -> None:
    box = pf.Box(3)
    ref = weakref.ref(box)
    with distproc.Executor(workers=1, serializer="pickle") as ex:
        assert ex.submit(box.times, 5).result(60) == 15
        assert ex.submit(pf.Box.make, 4).result(60) == 4  # a classmethod goes by name
        del box
        gc.collect()
        assert ref() is None
    # The native serializer: the object cannot travel, the name alone would lose it.
    with distproc.Executor(workers=1) as ex, pytest.raises(TypeError, match="bound to an object"):
        ex.submit(pf.Box(2).times, 1)


@pytest.mark.parametrize("chunksize", [1, None])
def test_map_keeps_no_result_once_yielded(chunksize: int | None) -> None:
    with distproc.Executor(workers=1, serializer="pickle") as ex:
        for obj in ex.map(pf.big, range(10), chunksize=chunksize):
            assert isinstance(obj, pf.Big)
            ref = weakref.ref(obj)
            del obj
            gc.collect()
            assert ref() is None

