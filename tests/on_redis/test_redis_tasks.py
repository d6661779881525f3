"""Masters and workers on a queue in a real redis-server, with no distproc server between."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from faults._procs import wait_for

import distproc
from distproc.tasks.redis_channels import RedisWorkerChannel
from distproc.tasks.worker import TaskWorker

from .conftest import RedisServer


class ThreadWorker:
    """A worker on threads of this process (``slots`` slots), stopped with the test."""

    def __init__(self, url: str, slots: int = 1, queue: str | None = None) -> None:
        self.worker = TaskWorker(("", 0), b"", slots=slots, process_slot=False,
                                 open_channel=RedisWorkerChannel.opener(url, queue), where=url)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def worker(redis_server: RedisServer) -> Iterator[ThreadWorker]:
    w = ThreadWorker(redis_server.url, slots=2)
    yield w
    w.stop()


def test_a_master_and_a_worker_share_a_queue_in_redis(
    redis_server: RedisServer, worker: ThreadWorker
) -> None:
    with distproc.Executor(connect=redis_server.url) as ex:
        assert list(ex.map(pow, range(200), [2] * 200)) == [x * x for x in range(200)]
        futures = [ex.submit(pow, x, 3) for x in range(100)]
        assert [f.result(30) for f in futures] == [x**3 for x in range(100)]
        chunks = ex.status()["tasks"]["done"] - 100  # map sends its calls in chunks
        status = ex.status()
    assert status["store"]["backend"] == "redis"
    assert status["tasks"]["done"] == 100 + chunks and chunks >= 1
    assert status["tasks"]["queued"] == 0 and status["tasks"]["leased"] == 0


def test_errors_and_retries_reach_the_master(
    redis_server: RedisServer, worker: ThreadWorker, tmp_path: Any
) -> None:
    import dp_taskfns

    with distproc.Executor(connect=redis_server.url, retry_on=[ConnectionError],
                           max_retries=3, retry_backoff=0.01) as ex:  # fmt: skip
        with pytest.raises(dp_taskfns.CustomError, match="boom 1"):
            ex.submit(dp_taskfns.boom, 1).result(30)
        assert ex.submit(dp_taskfns.flaky, str(tmp_path), 2).result(30) == "ok after 2"
        assert ex.status()["tasks"]["retried"] == 2


def test_two_masters_on_one_queue_each_get_their_own_results(
    redis_server: RedisServer, worker: ThreadWorker
) -> None:
    with distproc.Executor(connect=redis_server.url) as a, \
            distproc.Executor(connect=redis_server.url) as b:  # fmt: skip
        fa = [a.submit(pow, i, 2) for i in range(300)]
        fb = [b.submit(pow, i, 3) for i in range(300)]
        assert [f.result(30) for f in fa] == [i**2 for i in range(300)]
        assert [f.result(30) for f in fb] == [i**3 for i in range(300)]


def test_queues_are_apart(redis_server: RedisServer) -> None:
    crawl = ThreadWorker(redis_server.url, queue="crawl")
    try:
        with distproc.Executor(connect=redis_server.url, queue="crawl") as ex:
            assert ex.submit(pow, 3, 2).result(30) == 9
        with distproc.Executor(connect=redis_server.url, queue="other") as ex:
            future = ex.submit(pow, 3, 2)
            # Nobody serves "other": the task waits there.
            wait_for(lambda: ex.status()["tasks"]["queued"] == 1, what="the task queued")
            assert ex.cancel_futures([future]) == 1
    finally:
        crawl.stop()


def test_a_server_older_than_6_2_is_refused_by_name(redis_server: RedisServer) -> None:
    import redis

    from distproc.tasks.backends import redis_backend

    class Old(redis.Redis):
        def info(self, *args: Any, **kwargs: Any) -> Any:
            return {"redis_version": "6.0.9", "maxmemory_policy": "noeviction"}

    client = Old(port=redis_server.port)
    with pytest.raises(redis_backend.RedisTooOld, match=r"needs Redis 6\.2 or newer.*runs 6\.0\.9"):
        redis_backend.RedisBackend(redis_server.url, client=client)
    client.close()


def test_an_evicting_server_gets_a_warning(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    from distproc.tasks.backends.redis_backend import RedisBackend

    backend = RedisBackend(redis_server.url)
    backend.r.config_set("maxmemory-policy", "allkeys-lru")
    with caplog.at_level(logging.WARNING, "distproc.tasks"):
        RedisBackend(redis_server.url).close()
    backend.close()
    assert "maxmemory-policy allkeys-lru" in caplog.text
    assert "noeviction" in caplog.text


def test_a_queue_without_a_redis_url_is_refused_saying_why() -> None:
    with pytest.raises(ValueError, match=r"queue= names a queue in Redis"):
        distproc.Executor(connect=("127.0.0.1", 1), queue="crawl")
    with pytest.raises(ValueError, match="leave address, workers and store out"):
        distproc.Executor(connect=("127.0.0.1", 1), workers=2)
