"""No-op tasks through one private redis-server: distproc's Redis queue against Huey and RQ.

    python benchmarks/redis_peers.py [--tasks 20000] [--rounds 3]

Each side submits ``--tasks`` no-op tasks (``_tasks.square``), one worker
process runs them, and the side's master waits for every result; the time
from the first submit to the last result is one round.  The sides
alternate, round after round, on the same redis-server (started here on a
free loopback port, no persistence, stopped by pid), and the output gives
each side's median tasks/s with the range of its rounds.  The peers are not
the project's dependencies: the first run makes ``benchmarks/.redis-peers-venv``
with distproc (this checkout), Huey and RQ, and runs again from there.

Settings, printed with the figures: distproc ``Executor(connect=URL)`` with
``submit()`` one by one, and again with ``map`` (batched), one
``distproc worker URL -c 1`` process; Huey ``RedisHuey`` with
``huey_consumer -w 1 -k thread`` (one worker thread in one process),
results read with ``Result.get(blocking=True)``; RQ ``Queue.enqueue`` with
``rq worker -w rq.worker.SimpleWorker`` (no fork per job), done when the
finished-job registry holds every job.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".redis-peers-venv"
PEERS = ["huey>=2.5", "rq>=1.16"]


def _in_venv() -> None:
    """Run from the benchmark's own venv (made once), where the peers are installed."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-e",
                        f"{HERE.parent}[redis]", *PEERS], check=True)  # fmt: skip
    os.execv(str(python), [str(python), *sys.argv])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)  # polling the condition, with a deadline


def _start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(20)


def distproc_round(url: str, n: int, env: dict[str, str], batched: bool) -> float:
    import distproc

    _tasks = importlib.import_module("_tasks")

    worker = _start([sys.executable, "-m", "distproc", "worker", url, "-c", "1"], HERE, env)
    try:
        with distproc.Executor(connect=url) as ex:
            assert ex.submit(_tasks.square, 2).result(60) == 4  # the worker is up
            started = time.perf_counter()
            if batched:
                results = list(ex.map(_tasks.square, range(n)))
            else:
                futures = [ex.submit(_tasks.square, i) for i in range(n)]
                results = [f.result() for f in futures]
            elapsed = time.perf_counter() - started
        assert results == [i * i for i in range(n)]
        return n / elapsed
    finally:
        _stop(worker)


def huey_round(url: str, n: int, env: dict[str, str]) -> float:
    peer = importlib.import_module("_redis_peer_tasks")

    peer.huey.storage.flush_all()
    consumer = _start([str(VENV / "bin" / "huey_consumer"), "_redis_peer_tasks.huey",
                       "-w", "1", "-k", "thread"], HERE, env)  # fmt: skip
    try:
        assert peer.huey_square(2).get(blocking=True, timeout=60) == 4
        started = time.perf_counter()
        handles = [peer.huey_square(i) for i in range(n)]
        results = [h.get(blocking=True, timeout=120) for h in handles]
        elapsed = time.perf_counter() - started
        assert results == [i * i for i in range(n)]
        return n / elapsed
    finally:
        _stop(consumer)


def rq_round(url: str, n: int, env: dict[str, str]) -> float:
    import redis
    from rq import Queue  # type: ignore[import-not-found]
    from rq.registry import FinishedJobRegistry  # type: ignore[import-not-found]

    _tasks = importlib.import_module("_tasks")
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    queue = Queue("bench", connection=conn)
    worker = _start([str(VENV / "bin" / "rq"), "worker", "bench", "--url", url,
                     "-w", "rq.worker.SimpleWorker"], HERE, env)  # fmt: skip
    try:
        probe = queue.enqueue(_tasks.square, 2)
        _wait(lambda: probe.get_status() == "finished", 60, "the RQ worker")
        registry = FinishedJobRegistry(queue=queue)
        before = registry.count
        started = time.perf_counter()
        with conn.pipeline() as pipe:
            jobs = [queue.enqueue(_tasks.square, i, pipeline=pipe) for i in range(n)]
            pipe.execute()
        _wait(lambda: registry.count - before >= n, 600, "the RQ jobs")
        elapsed = time.perf_counter() - started
        assert jobs[-1].fetch(jobs[-1].id, connection=conn).result == (n - 1) ** 2
        return n / elapsed
    finally:
        _stop(worker)
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    _in_venv()
    sys.path.insert(0, str(HERE))
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    directory = tempfile.mkdtemp()
    redis_proc = _start([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                         "--dir", directory], HERE, dict(os.environ))  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(HERE), BENCH_REDIS_URL=url)
    os.environ["BENCH_REDIS_URL"] = url
    try:
        import redis

        _wait(lambda: _pings(redis, port), 10, "redis-server")
        version = redis.Redis(port=port).info()["redis_version"]
        sides: dict[str, Callable[[], float]] = {
            "distproc submit()": lambda: distproc_round(url, options.tasks, env, False),
            "distproc map": lambda: distproc_round(url, options.tasks, env, True),
            "Huey (RedisHuey, 1 thread)": lambda: huey_round(url, options.tasks, env),
            "RQ (SimpleWorker)": lambda: rq_round(url, options.tasks, env),
        }
        rates: dict[str, list[float]] = {name: [] for name in sides}
        for i in range(options.rounds):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for name in order:
                rates[name].append(sides[name]())
                print(f"round {i + 1}: {name}: {rates[name][-1]:,.0f} tasks/s", flush=True)
        print(f"\nredis-server {version} on 127.0.0.1, {options.tasks:,} no-op tasks, one "
              f"worker process, {options.rounds} alternating rounds, {os.cpu_count()} CPUs "
              f"unpinned, load average at end {os.getloadavg()[0]:.2f}")  # fmt: skip
        best_peer = max(statistics.median(rates[n]) for n in sides if "distproc" not in n)
        for name, got in rates.items():
            median = statistics.median(got)
            print(f"  {name:28} {median:10,.0f} tasks/s  ({min(got):,.0f}-{max(got):,.0f})"
                  f"  {median / best_peer:6.2f}x the fastest peer")  # fmt: skip
    finally:
        _stop(redis_proc)
        shutil.rmtree(directory, ignore_errors=True)


def _pings(redis: object, port: int) -> bool:
    try:
        return bool(redis.Redis(port=port).ping())  # type: ignore[attr-defined]
    except Exception:
        return False


if __name__ == "__main__":
    main()
