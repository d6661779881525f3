"""The Redis backend under real faults: kill -9 and SIGSTOP of workers, kill -9 of redis-server.

Workers are ``distproc worker redis://...`` subprocesses; tasks report where
they run through a :class:`hub.Hub` and block until the test releases them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dp_taskfns as fns
import pytest
from faults._procs import Proc, wait_for
from hub import Hub

import distproc
from distproc.errors import ServiceLostError, TaskImportError, WorkerLostError

from .conftest import RedisServer

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def _workers(procs: Callable[..., Proc], url: str, count: int) -> None:
    for _ in range(count):
        procs("worker", url, "-c", "1").wait_ready()


def test_kill_9_of_a_worker_mid_task_runs_it_elsewhere(
    redis_server: RedisServer, hub: Hub, procs: Callable[..., Proc]
) -> None:
    with distproc.Executor(connect=redis_server.url, heartbeat_timeout=1.0) as ex:
        _workers(procs, redis_server.url, 2)
        futures = [ex.submit(fns.hold, hub.port, x) for x in range(10)]
        _, pid = hub.next_started()
        os.kill(pid, signal.SIGKILL)
        hub.release()
        assert [f.result(60) for f in futures] == [x * x for x in range(10)]
        tasks = ex.status()["tasks"]
        assert tasks["done"] == 10  # each task completed once
        assert tasks["reclaimed"] >= 1
        assert tasks["dead"] == 0


def test_sigstop_past_the_heartbeat_timeout_then_sigcont_discards_the_late_result(
    redis_server: RedisServer, hub: Hub, procs: Callable[..., Proc]
) -> None:
    with distproc.Executor(connect=redis_server.url, heartbeat_timeout=1.0) as ex:
        _workers(procs, redis_server.url, 2)
        future = ex.submit(fns.hold, hub.port, 7)
        _, stopped = hub.next_started()
        os.kill(stopped, signal.SIGSTOP)
        try:
            _, again = hub.next_started(timeout=30)  # reclaimed by the other worker
            assert again != stopped
            hub.release()
            assert future.result(60) == 49
        finally:
            os.kill(stopped, signal.SIGCONT)
        wait_for(lambda: ex.status()["tasks"]["discarded"] >= 1, what="the late result")
        tasks = ex.status()["tasks"]
        assert tasks["done"] == 1 and tasks["discarded"] == 1  # it ran again once
        assert [f.result(30) for f in [ex.submit(fns.square, 4)]] == [16]


def test_a_long_task_keeps_its_lease_while_its_worker_renews_it(
    redis_server: RedisServer, hub: Hub, procs: Callable[..., Proc]
) -> None:
    with distproc.Executor(connect=redis_server.url, heartbeat_timeout=0.5) as ex:
        _workers(procs, redis_server.url, 2)
        future = ex.submit(fns.hold, hub.port, 3)
        hub.next_started()
        # Held across many heartbeat timeouts: the owner's renewals keep it.
        wait_for(lambda: _renewed_past(ex, 4 * 0.5), what="four heartbeat timeouts")
        hub.release()
        assert future.result(30) == 9
        tasks = ex.status()["tasks"]
        assert tasks["reclaimed"] == 0 and tasks["done"] == 1


def _renewed_past(ex: distproc.Executor, seconds: float) -> bool:
    import time

    first = getattr(_renewed_past, "start", None)
    if first is None:
        _renewed_past.start = time.monotonic()  # type: ignore[attr-defined]
        return False
    if time.monotonic() - first < seconds:
        return False
    del _renewed_past.start  # type: ignore[attr-defined]
    return True


def test_kill_9_of_redis_server_restarted_on_its_port_loses_nothing(
    durable_redis: RedisServer, procs: Callable[..., Proc]
) -> None:
    count = 400
    with distproc.Executor(connect=durable_redis.url) as ex:
        _workers(procs, durable_redis.url, 2)
        futures = [ex.submit(fns.slow_square, x, 0.005) for x in range(count)]
        wait_for(lambda: ex.status()["tasks"]["done"] >= 50, what="some tasks done")
        durable_redis.kill()
        durable_redis.start()
        assert [f.result(90) for f in futures] == [x * x for x in range(count)]
        tasks = ex.status()["tasks"]
        assert tasks["done"] == count  # each completed once, none lost in the restart
        # Masters and workers carry on by themselves.
        assert ex.submit(fns.square, 5).result(30) == 25


def test_a_task_that_kills_its_workers_is_dead_lettered_and_the_commands_show_it(
    redis_server: RedisServer, procs: Callable[..., Proc]
) -> None:
    url = redis_server.url
    with distproc.Executor(connect=url, heartbeat_timeout=0.5, max_attempts=2) as ex:
        _workers(procs, url, 1)
        poison = ex.submit(fns.die, 1)
        with pytest.raises(WorkerLostError, match=r"took down 2 worker\(s\)") as info:
            poison.result(60)
        assert len(info.value.attempts) == 2
        assert ex.submit(fns.square, 3).result(30) == 9  # the fleet goes on
    listing = subprocess.run([sys.executable, "-m", "distproc", "status", url, "--json"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    report = json.loads(listing.stdout)
    assert report["tasks"]["dead"] == 1 and report["store"]["backend"] == "redis"
    letters = subprocess.run([sys.executable, "-m", "distproc", "dead-letters", url, "--json"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    [letter] = json.loads(letters.stdout)
    assert letter["function"] == "dp_taskfns:die" and "took down 2" in letter["reason"]


def test_a_function_the_workers_cannot_import_fails_naming_the_worker(
    redis_server: RedisServer, procs: Callable[..., Proc], tmp_path: Path
) -> None:
    _workers(procs, redis_server.url, 1)  # started before the module is on this path
    (tmp_path / "only_here.py").write_text("def f(x):\n    return x\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import only_here  # type: ignore[import-not-found]

        with distproc.Executor(connect=redis_server.url) as ex, \
                pytest.raises(TaskImportError, match="only_here"):  # fmt: skip
            ex.submit(only_here.f, 1).result(30)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("only_here", None)


def test_distproc_map_through_a_redis_queue_with_its_own_and_remote_workers(
    redis_server: RedisServer, procs: Callable[..., Proc], tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f"{x}\n" for x in range(300)))
    out = tmp_path / "out.jsonl"
    _workers(procs, redis_server.url, 1)  # a remote worker; the map starts one more (-w 1)
    run = procs("map", "dp_taskfns:square", str(source), "-o", str(out), "-w", "1",
                "--connect", redis_server.url, "--no-progress")  # fmt: skip
    assert run.finish(90) == 0, run.text
    assert out.read_text().split() == [str(x * x) for x in range(300)]


def test_an_executor_on_redis_starts_its_own_workers(redis_server: RedisServer) -> None:
    with distproc.Executor(connect=redis_server.url, workers=2, queue="own") as ex:
        assert list(ex.map(fns.square, range(50))) == [x * x for x in range(50)]
        assert len({ex.submit(fns.pid).result(30) for _ in range(20)} - {os.getpid()}) >= 1


def test_a_redis_restarted_without_its_data_ends_the_master_with_a_clear_error(
    redis_server: RedisServer, procs: Callable[..., Proc]
) -> None:
    with distproc.Executor(connect=redis_server.url, reconnect_timeout=30) as ex:
        _workers(procs, redis_server.url, 1)
        assert ex.submit(fns.square, 2).result(30) == 4
        redis_server.kill()
        redis_server.start()  # no persistence: the queue and the master are gone
        with pytest.raises(ServiceLostError, match="appendonly yes"):
            ex.submit(fns.square, 3).result(30)
        with pytest.raises(ServiceLostError):
            ex.submit(fns.square, 4)  # every later call says it too
