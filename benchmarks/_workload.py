"""One measurement of one workload on one implementation; prints one JSON line.

``benchmarks/run.py`` runs this file once per measurement, as a fresh process
(under ``taskset -c CPU`` for the pinned placement, so the manager's server
process and every worker process forked from it, or started by an Executor,
inherit the same CPU):

    python benchmarks/_workload.py --workload a --impl distproc --variant plain
    python benchmarks/_workload.py --workload h --impl distproc --variant chunksize1 \
        --n 100000 --workers 1

The last line of stdout is ``RESULT {...}``: the metrics, the CPUs this process
and the server process were allowed to run on, and ``"na"`` (with a reason)
when the variant needs an API this distproc does not have yet.  Progress and
errors go to stderr.  Every process this file starts stops by itself: workers
stop at a sentinel, idle clients when told on a pipe, servers on ``shutdown()``,
an Executor's worker processes when it shuts down.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import multiprocessing
import os
import resource
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any

AUTHKEY = b"distproc-benchmarks"
LOOPBACK = ("127.0.0.1", 0)
#: ``get_many``/``put_many`` chunk size of the batched variant.
CHUNK = 1000
#: Per-call timeout of the master's blocking gets: a stuck run fails instead of hanging.
GET_TIMEOUT = 120.0
#: Idle clients that connect (or disconnect) at once, over all their processes, (f).
CONNECTING = 16

Metrics = dict[str, Any]


def stop_processes(procs: list[Any], manager: Any) -> None:
    """Terminate the worker processes still alive, then shut their manager down."""
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
            proc.join()
    manager.shutdown()


# ------------------------------------------------------------ the managers
def managers_module(impl: str) -> Any:
    """``multiprocessing.managers`` or ``distproc.managers``.

    distproc is imported only for its own measurements, so that a stdlib server
    process (forked from this one) does not carry distproc's modules in its RSS.
    """
    return importlib.import_module(
        "multiprocessing.managers" if impl == "stdlib" else "distproc.managers"
    )


def queue_manager(impl: str, address: Any = LOOPBACK) -> Any:
    """The seed's QueueManager, from the module that differs only in its import."""
    seed = importlib.import_module(f"_seed_{impl}")
    return seed.QueueManager(address=address, authkey=AUTHKEY)


def sync_manager(impl: str, address: Any = LOOPBACK) -> Any:
    return managers_module(impl).SyncManager(address=address, authkey=AUTHKEY)


class NotAvailable(Exception):
    """The variant needs an API that this distproc does not have (yet)."""


# --------------------------------------------------------------------- /proc
def proc_status(pid: int) -> dict[str, str]:
    fields: dict[str, str] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def server_pid(manager: Any) -> int:
    """The pid of the server process that ``manager.start()`` made."""
    pid = manager._process.pid  # both implementations keep the Process here
    assert isinstance(pid, int)
    return pid


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time so far of these processes (all their threads).

    A process that has exited but is not reaped yet still reports its times.
    """
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def server_cpus(manager: Any) -> str:
    return proc_status(server_pid(manager)).get("Cpus_allowed_list", "?")


def raise_nofile_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


# --------------------------------------------------- (a), (b): the seed pattern
def seed_worker(impl: str, variant: str, address: Any, ready: Connection) -> None:
    """A worker: connect(), take each task, square it, put the result back."""
    manager = queue_manager(impl, address)
    manager.connect()
    task = manager.get_task_queue()
    result = manager.get_result_queue()
    task.qsize()  # open this process's connection before the clock starts
    result.qsize()
    ready.send("ready")
    ready.close()
    if variant == "plain":
        while True:
            n = task.get()
            if n is None:
                break
            result.put(n * n)
        return
    while True:
        items = task.get_many(CHUNK)
        squares = [n * n for n in items if n is not None]
        if squares:
            result.put_many(squares)
        sentinels = len(items) - len(squares)
        if sentinels:
            # The sentinels come last, one per worker; hand back the others' ones.
            if sentinels > 1:
                task.put_many([None] * (sentinels - 1))
            break


def seed_pattern(impl: str, variant: str, n: int, workers: int) -> Metrics:
    manager = queue_manager(impl)
    manager.start()
    ctx = multiprocessing.get_context()
    procs: list[Any] = []
    try:
        task = manager.get_task_queue()
        result = manager.get_result_queue()
        if variant == "batched" and not (hasattr(task, "put_many") and hasattr(task, "get_many")):
            raise NotAvailable("the queue proxy has no put_many/get_many")
        readies: list[Connection] = []
        for _ in range(workers):
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=seed_worker, args=(impl, variant, manager.address, writer))
            proc.start()
            writer.close()
            procs.append(proc)
            readies.append(reader)
        task.qsize()
        result.qsize()
        for reader in readies:
            if reader.recv() != "ready":
                raise RuntimeError("a worker did not start")
            reader.close()

        total = 0
        pids = [os.getpid(), server_pid(manager), *(proc.pid for proc in procs)]
        cpu_before = cpu_seconds(pids)
        started = time.perf_counter()
        if variant == "plain":
            for i in range(n):
                task.put(i)
            for _ in range(workers):
                task.put(None)
            for _ in range(n):
                total += result.get(timeout=GET_TIMEOUT)
        else:
            for first in range(0, n, CHUNK):
                task.put_many(list(range(first, min(n, first + CHUNK))))
            task.put_many([None] * workers)
            got = 0
            while got < n:
                batch = result.get_many(CHUNK, timeout=GET_TIMEOUT)
                got += len(batch)
                total += sum(batch)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pids) - cpu_before

        for proc in procs:
            proc.join(GET_TIMEOUT)
        if total != sum(i * i for i in range(n)):
            raise RuntimeError("the results do not add up")
        metrics: Metrics = {
            "items_per_s": n / elapsed,
            "seconds": elapsed,
            "n": n,
            "workers": workers,
            "server_cpus": server_cpus(manager),
        }
        if variant == "plain":  # batched runs last a few ms: below the 10 ms clock tick
            metrics["cpu_us_per_item"] = cpu / n * 1e6
        return metrics
    finally:
        stop_processes(procs, manager)


# ------------------------------------------------------------ (c): put+get pairs
def timed_pairs(q: Any, item: Any, duration: float, min_pairs: int) -> tuple[int, float]:
    """Put+get pairs on ``q`` for ``duration`` seconds (and at least ``min_pairs``)."""
    pairs = 0
    started = time.perf_counter()
    deadline = started + duration
    while True:
        q.put(item)
        q.get()
        pairs += 1
        now = time.perf_counter()
        if now >= deadline and pairs >= min_pairs:
            return pairs, now - started


def pairs_one_client(impl: str, duration: float) -> Metrics:
    manager = sync_manager(impl)
    manager.start()
    try:
        q = manager.Queue()
        timed_pairs(q, 1, 0.0, 200)  # warm-up
        pids = [os.getpid(), server_pid(manager)]
        cpu_before = cpu_seconds(pids)
        pairs, elapsed = timed_pairs(q, 1, duration, 1)
        cpu = cpu_seconds(pids) - cpu_before
        return {
            "pairs_per_s": pairs / elapsed,
            "cpu_us_per_pair": cpu / pairs * 1e6,
            "pairs": pairs,
            "server_cpus": server_cpus(manager),
        }
    finally:
        manager.shutdown()


# ------------------------------------------------- (d): 8 threads, one proxy
def pairs_threads(impl: str, duration: float, threads: int) -> Metrics:
    manager = sync_manager(impl)
    manager.start()
    try:
        q = manager.Queue()
        clock: dict[str, float] = {}

        pids = [os.getpid(), server_pid(manager)]

        def start_clock() -> None:  # runs once, when every thread has warmed up
            clock["cpu"] = cpu_seconds(pids)
            clock["start"] = time.perf_counter()

        barrier = threading.Barrier(threads, action=start_clock)
        counts = [0] * threads
        ends = [0.0] * threads
        errors: list[BaseException] = []

        def run(index: int) -> None:
            try:
                q.put(index)  # first call: the stdlib opens this thread's connection
                q.get()
                barrier.wait()
                deadline = clock["start"] + duration
                pairs = 0
                while True:
                    q.put(index)
                    q.get()
                    pairs += 1
                    now = time.perf_counter()
                    if now >= deadline:
                        break
                counts[index] = pairs
                ends[index] = now
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
                barrier.abort()

        pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        cpu = cpu_seconds(pids) - clock["cpu"]
        if errors:
            raise errors[0]
        elapsed = max(ends) - clock["start"]
        return {
            "pairs_per_s": sum(counts) / elapsed,
            "cpu_us_per_pair": cpu / sum(counts) * 1e6,
            "pairs": sum(counts),
            "threads": threads,
            "server_cpus": server_cpus(manager),
        }
    finally:
        manager.shutdown()


# ---------------------------------------------------------------- (e): payloads
PAYLOADS = {"100B": 100, "17KB": 17 * 1024, "1MiB": 1024 * 1024}


def payload_pairs(impl: str, duration: float) -> Metrics:
    manager = sync_manager(impl)
    manager.start()
    try:
        q = manager.Queue()
        metrics: Metrics = {"server_cpus": server_cpus(manager)}
        for name, size in PAYLOADS.items():
            payload = os.urandom(size)
            timed_pairs(q, payload, 0.0, 3)  # warm-up
            pids = [os.getpid(), server_pid(manager)]
            cpu_before = cpu_seconds(pids)
            pairs, elapsed = timed_pairs(q, payload, duration, 5)
            cpu = cpu_seconds(pids) - cpu_before
            per_pair = elapsed / pairs
            metrics[f"us_per_pair_{name}"] = per_pair * 1e6
            metrics[f"cpu_us_per_pair_{name}"] = cpu / pairs * 1e6
            metrics[f"mb_per_s_{name}"] = 2 * size / per_pair / 1e6  # sent + received
            metrics[f"pairs_{name}"] = pairs
        return metrics
    finally:
        manager.shutdown()


# ------------------------------------------------------- (f): idle clients
def server_sockets(pid: int) -> int:
    """Sockets open in process ``pid``: its listener and one per connection."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def collect(reader: Connection, messages: int, procs: list[Any]) -> int:
    """The sum of ``messages`` numbers sent on ``reader`` by ``procs``, which must not exit."""
    total = 0
    sentinels = [proc.sentinel for proc in procs]
    for _ in range(messages):
        ready = wait([reader, *sentinels], GET_TIMEOUT)
        if reader in ready:
            total += reader.recv()
        elif ready:
            raise RuntimeError("a client process exited before all clients were connected")
        else:
            raise TimeoutError("the clients did not connect in time")
    return total


def idle_client_threads(
    impl: str, address: Any, clients: int, gate: Any, ready: Connection, release: Connection
) -> None:
    """``clients`` threads, each with its own proxy that made one call, then idle."""
    raise_nofile_limit()
    manager = queue_manager(impl, address)
    manager.connect()
    go_idle = threading.Event()
    all_connected = threading.Barrier(clients + 1)

    def client() -> None:
        with gate:
            q = manager.get_task_queue()
            q.qsize()  # one call: the connection it used stays open
        all_connected.wait()
        go_idle.wait()
        with gate:
            del q  # its decref

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    all_connected.wait()
    ready.send(clients)
    release.recv()  # the parent has measured
    go_idle.set()
    for t in threads:
        t.join()


def idle_client_process(
    impl: str, address: Any, gate: Any, ready: Connection, release: tuple[Connection, Connection]
) -> None:
    """One client process: a proxy that made one call, then idle until released."""
    reader, writer = release
    writer.close()  # only the parent's copy may stay open: its close releases everyone
    manager = queue_manager(impl, address)
    with gate:
        manager.connect()
        q = manager.get_task_queue()
        q.qsize()
    ready.send(1)
    with contextlib.suppress(EOFError):
        reader.recv()
    # Gone at once, as a killed client would be: 1000 decrefs at the same moment
    # would only measure the server's listen() backlog, after the measurement.
    os._exit(0)


def idle_clients(impl: str, clients: int, processes: int, one_process_each: bool) -> Metrics:
    """A server with ``clients`` connected idle clients: its threads, RSS and sockets.

    The clients are threads spread over ``processes`` processes, or with
    ``one_process_each``, one process per client.  At most ``CONNECTING`` of them
    talk to the server at once (to connect, and to drop their proxy at the end):
    the stdlib authenticates each connection in its one accepting thread and
    listens with a backlog of 16, so a bigger burst stalls in SYN-ACK
    retransmissions for seconds and measures the kernel, not the server.
    """
    raise_nofile_limit()  # the server process inherits it
    manager = queue_manager(impl)
    manager.start()
    ctx = multiprocessing.get_context()
    gate = ctx.BoundedSemaphore(CONNECTING)
    procs: list[Any] = []
    try:
        pid = server_pid(manager)
        before = proc_status(pid)
        sockets_before = server_sockets(pid)
        ready_r, ready_w = ctx.Pipe(duplex=False)
        if one_process_each:
            release_r, release_w = ctx.Pipe(duplex=False)
            for _ in range(clients):
                proc = ctx.Process(
                    target=idle_client_process,
                    args=(impl, manager.address, gate, ready_w, (release_r, release_w)),
                )
                proc.start()
                procs.append(proc)
            ready_w.close()
            release_r.close()
            connected = collect(ready_r, clients, procs)
            after = proc_status(pid)
            sockets = server_sockets(pid)
            release_w.close()  # every client sees EOF and exits
        else:
            releases: list[Connection] = []
            share = [clients // processes + (i < clients % processes) for i in range(processes)]
            for count in share:
                release_r, release_w = ctx.Pipe(duplex=False)
                proc = ctx.Process(
                    target=idle_client_threads,
                    args=(impl, manager.address, count, gate, ready_w, release_r),
                )
                proc.start()
                release_r.close()
                procs.append(proc)
                releases.append(release_w)
            ready_w.close()
            connected = collect(ready_r, len(share), procs)
            after = proc_status(pid)
            sockets = server_sockets(pid)
            for writer in releases:
                writer.send("done")
        for proc in procs:
            proc.join(GET_TIMEOUT)
        rss_before = int(before["VmRSS"].split()[0]) / 1024
        rss_after = int(after["VmRSS"].split()[0]) / 1024
        return {
            "server_threads": int(after["Threads"]),
            "server_rss_mb": rss_after,
            "server_connections": sockets - sockets_before,
            "idle_server_threads": int(before["Threads"]),
            "idle_server_rss_mb": rss_before,
            "added_rss_mb": rss_after - rss_before,
            "clients": connected,
            "client_processes": clients if one_process_each else processes,
            "server_cpus": after.get("Cpus_allowed_list", "?"),
        }
    finally:
        stop_processes(procs, manager)


# --------------------------------------------------------- (g): proxy creation
def proxy_creation(impl: str, duration: float) -> Metrics:
    server = sync_manager(impl)
    server.start()
    try:
        client = sync_manager(impl, server.address)
        client.connect()
        for _ in range(3):  # warm-up
            client.Queue()
        created = 0
        started = time.perf_counter()
        deadline = started + duration
        while True:
            proxy = client.Queue()
            del proxy  # dropped: its decref goes to the server now
            created += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        return {
            "proxies_per_s": created / (now - started),
            "proxies": created,
            "server_cpus": server_cpus(server),
        }
    finally:
        server.shutdown()


# ------------------------------------------- (h), (i): tasks end to end
def task_function(name: str) -> Any:
    """A function of ``_tasks.py``, which both sides' workers run."""
    return importlib.import_module("_tasks").FUNCTIONS[name]


def expected_result(name: str, n: int) -> int:
    return n * n if name == "square" else n


def cpus_of(pids: list[int]) -> str:
    """The distinct ``Cpus_allowed_list`` of these processes, e.g. ``0-1`` or ``0``."""
    found = {proc_status(pid).get("Cpus_allowed_list", "?") for pid in pids}
    return " / ".join(sorted(found)) or "?"


def sleep_duration(seconds: float, count: int) -> float:
    """How long ``time.sleep(seconds)`` really takes here, on average over ``count`` calls."""
    started = time.perf_counter()
    for _ in range(count):
        time.sleep(seconds)
    return (time.perf_counter() - started) / count


def sleep_before(name: str) -> float | None:
    """For ``sleep_1ms``: how long a 1 ms ``sleep()`` really takes here (before the clock)."""
    if name != "sleep_1ms":
        return None
    return sleep_duration(importlib.import_module("_tasks").SLEEP, 200)


def task_metrics(name: str, n: int, workers: int, elapsed: float, slept: float | None) -> Metrics:
    metrics: Metrics = {"tasks_per_s": n / elapsed, "seconds": elapsed, "n": n, "workers": workers}
    if slept is not None:
        pause = importlib.import_module("_tasks").SLEEP
        ideal = workers / pause
        metrics["ideal_per_s"] = ideal
        metrics["pct_of_ideal"] = 100 * metrics["tasks_per_s"] / ideal
        # sleep() overshoots (timer slack, wake-up latency): the best any side can do.
        metrics["sleep_us"] = slept * 1e6
        metrics["sleep_bound_pct"] = 100 * pause / slept
    return metrics


def stdlib_task_worker(name: str, address: Any, ready: Connection) -> None:
    """The seed's worker, calling ``name`` on each int: connect(), get, call, put."""
    fn = task_function(name)
    manager = queue_manager("stdlib", address)
    manager.connect()
    task = manager.get_task_queue()
    result = manager.get_result_queue()
    task.qsize()  # open this process's connection before the clock starts
    result.qsize()
    ready.send("ready")
    ready.close()
    while True:
        n = task.get()
        if n is None:
            break
        result.put(fn(n))


def stdlib_round(task: Any, result: Any, n: int) -> int:
    """The seed's master: put ``n`` ints on the task queue, then get ``n`` results."""
    for i in range(n):
        task.put(i)
    total = 0
    for _ in range(n):
        total += result.get(timeout=GET_TIMEOUT)
    return total


def stdlib_tasks(name: str, n: int, workers: int, warmup: int) -> Metrics:
    """(h), (i) on the stdlib: the seed pattern on ``multiprocessing.managers``."""
    manager = queue_manager("stdlib")
    manager.start()
    ctx = multiprocessing.get_context()
    procs: list[Any] = []
    try:
        task = manager.get_task_queue()
        result = manager.get_result_queue()
        readies: list[Connection] = []
        for _ in range(workers):
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=stdlib_task_worker, args=(name, manager.address, writer))
            proc.start()
            writer.close()
            procs.append(proc)
            readies.append(reader)
        for reader in readies:
            if reader.recv() != "ready":
                raise RuntimeError("a worker did not start")
            reader.close()
        stdlib_round(task, result, warmup)
        slept = sleep_before(name)
        started = time.perf_counter()
        total = stdlib_round(task, result, n)
        elapsed = time.perf_counter() - started
        worker_cpus = cpus_of([proc.pid for proc in procs])
        for _ in procs:
            task.put(None)
        for proc in procs:
            proc.join(GET_TIMEOUT)
        if total != sum(expected_result(name, i) for i in range(n)):
            raise RuntimeError("the results do not add up")
        metrics = task_metrics(name, n, workers, elapsed, slept)
        metrics["server_cpus"] = server_cpus(manager)
        metrics["worker_cpus"] = worker_cpus
        return metrics
    finally:
        stop_processes(procs, manager)


def wait_for_workers(executor: Any, count: int) -> None:
    """Until ``count`` worker processes have joined the Executor's task service."""
    deadline = time.monotonic() + GET_TIMEOUT
    while len(executor.status()["workers"]) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} worker process(es) did not join in time")
        time.sleep(0.02)


def distproc_tasks(name: str, variant: str, n: int, workers: int, warmup: int) -> Metrics:
    """(h), (i) on distproc: ``Executor(workers=...).map``, adaptive chunks or ``chunksize=1``."""
    from distproc import Executor

    fn = task_function(name)
    chunksize = 1 if variant == "chunksize1" else None
    with Executor(workers=workers, progress=False) as executor:
        wait_for_workers(executor, workers)
        list(executor.map(fn, range(warmup), chunksize=chunksize))
        slept = sleep_before(name)
        done_before = executor.status()["tasks"]["done"]
        started = time.perf_counter()
        results = list(executor.map(fn, range(n), chunksize=chunksize))
        elapsed = time.perf_counter() - started
        status = executor.status()
        worker_cpus = cpus_of([w["pid"] for w in status["workers"]])
    if results != [expected_result(name, i) for i in range(n)]:
        raise RuntimeError("the results are wrong or out of order")
    # Each map chunk is one task of the service: how many there were, and their mean size.
    chunks = status["tasks"]["done"] - done_before
    metrics = task_metrics(name, n, workers, elapsed, slept)
    metrics.update(
        chunks=chunks,
        mean_chunk=n / chunks if chunks else 0.0,
        # The task service runs on a thread of this process.
        server_cpus=proc_status(os.getpid()).get("Cpus_allowed_list", "?"),
        worker_cpus=worker_cpus,
    )
    return metrics


# ---------------------------------------------------------------------- main
def measure(args: argparse.Namespace) -> Metrics:
    w = args.workload
    tasks = w in ("h", "i")
    if args.variant == "chunksize1" and not tasks:
        raise ValueError("the chunksize1 variant is for workloads (h) and (i)")
    if args.variant == "batched" and tasks:
        raise ValueError("workloads (h) and (i) have no batched variant: see chunksize1")
    if w == "a":
        return seed_pattern(args.impl, args.variant, args.n, 1)
    if w == "b":
        return seed_pattern(args.impl, args.variant, args.n, args.workers)
    if w == "c":
        return pairs_one_client(args.impl, args.duration)
    if w == "d":
        return pairs_threads(args.impl, args.duration, args.threads)
    if w == "e":
        return payload_pairs(args.impl, args.duration)
    if w == "f":
        return idle_clients(args.impl, args.clients, args.processes, args.clients_as == "processes")
    if w == "g":
        return proxy_creation(args.impl, args.duration)
    if tasks:
        name = "square" if w == "h" else "sleep_1ms"
        if args.impl == "stdlib":
            return stdlib_tasks(name, args.n, args.workers, args.warmup)
        return distproc_tasks(name, args.variant, args.n, args.workers, args.warmup)
    raise ValueError(f"unknown workload {w!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True, choices=list("abcdefghi"))
    parser.add_argument("--impl", required=True, choices=["stdlib", "distproc"])
    parser.add_argument(
        "--variant",
        default="plain",
        choices=["plain", "batched", "chunksize1"],
        help="batched: (a), (b) with put_many/get_many; chunksize1: (h), (i) with map(chunksize=1)",
    )
    parser.add_argument("--n", type=int, default=10_000, help="items or tasks, (a), (b), (h), (i)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes, (b), (h), (i)")
    parser.add_argument("--warmup", type=int, default=1000, help="tasks before the clock, (h), (i)")
    parser.add_argument("--threads", type=int, default=8, help="threads, (d)")
    parser.add_argument("--clients", type=int, default=1000, help="idle clients, (f)")
    parser.add_argument("--processes", type=int, default=4, help="client processes, (f)")
    parser.add_argument(
        "--clients-as",
        default="threads",
        choices=["threads", "processes"],
        help="(f): threads spread over --processes processes, or one process each",
    )
    parser.add_argument("--duration", type=float, default=1.0, help="timed loops, seconds")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (no taskset)")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    out: dict[str, Any] = {
        "workload": args.workload,
        "impl": args.impl,
        "variant": args.variant,
        "cpus": sorted(os.sched_getaffinity(0)),
    }
    try:
        out["metrics"] = measure(args)
        status = 0
    except NotAvailable as exc:
        out["na"] = str(exc)
        status = 0
    except Exception as exc:
        traceback.print_exc()
        out["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    print("RESULT " + json.dumps(out), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
