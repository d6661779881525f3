"""Durable task stores side by side in one run: what keeping tasks on disk costs.

    python benchmarks/durable.py              # 5 rounds (~10 min with Huey)
    python benchmarks/durable.py --quick      # 2 rounds, smaller sizes
    pip install huey                          # the peer: without it, its side is left out

Four sides, one worker process each, no-op tasks (``_tasks.square``):

* ``memory``: ``Executor(address=..., workers=1)``, tasks in the service's memory;
* ``sqlite-full``: the same with ``store=FILE`` (``synchronous=FULL``, the default);
* ``sqlite-normal``: ``store=FILE, store_sync="normal"``;
* ``huey``: Huey's ``SqliteHuey`` (WAL, ``fsync=True``, i.e. ``synchronous=FULL``)
  with its consumer, ``-w 1 -k process``: a peer with a durable embedded queue.

Two workloads: ``map`` (N no-op tasks through ``Executor.map``; Huey's
``task.map``) and ``submit`` (N ``submit()`` calls one by one, then every
result; Huey: N calls of the task, then every ``Result.get(blocking=True)``).
Huey's ``map`` gets at most
:data:`HUEY_MAP_MAX` tasks (it runs at some hundreds a second).  Each
measurement is a fresh process (``--side``), timed after a warm-up of 1,000
tasks, from the first submit to the last result; the sides alternate within
each round (the order turns by one every round) so that the noise of a shared
machine falls on all.  It prints medians with min-max, the ratio of each
side to ``memory`` (median and min-max of the paired ratios of the rounds),
the CPU time that the side's processes used (user + system, all of them:
master, service, workers, consumer) per 1,000 tasks, and fsyncs per task,
counted in one more, untimed run of each side under ``strace -f -c`` (when
strace exists).  Targets (issue 15): ``sqlite-full`` keeps at least half of
``memory``'s rate on ``map``; on ``submit`` it reaches at least 10x Huey's.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script: the package of run.py
from benchmarks import run  # noqa: E402  # after the path above

SIDES = ("memory", "sqlite-full", "sqlite-normal", "huey")
WORKLOADS = {"map": 100_000, "submit": 20_000}
QUICK = {"map": 20_000, "submit": 4_000}
WARMUP = 1_000
#: Huey's ``map`` runs at some hundreds of tasks/s: it gets at most this many (a rate is a rate).
HUEY_MAP_MAX = 5_000
TARGETS = {  # (workload, side, against): at least this ratio
    ("map", "sqlite-full", "memory"): 0.5,
    ("submit", "sqlite-full", "huey"): 10.0,
}


# ------------------------------------------------------------ one side, one process
def _distproc_side(side: str, workload: str, n: int, warmup: int, directory: str) -> float:
    import distproc

    square = importlib.import_module("_tasks").square

    store = None if side == "memory" else os.path.join(directory, "tasks.db")
    sync = "normal" if side == "sqlite-normal" else "full"
    with distproc.Executor(address=("127.0.0.1", 0), authkey=os.urandom(16).hex(), workers=1,
                           store=store, store_sync=sync, progress=False) as ex:  # fmt: skip
        if warmup:
            assert list(ex.map(square, range(warmup))) == [x * x for x in range(warmup)]
        started = time.perf_counter()
        if workload == "map":
            got = list(ex.map(square, range(n)))
        else:
            futures = [ex.submit(square, x) for x in range(n)]
            got = [f.result() for f in futures]
        took = time.perf_counter() - started
    assert got == [x * x for x in range(n)], "wrong results"
    return took


def _huey_side(workload: str, n: int, warmup: int, directory: str) -> float:
    env = dict(os.environ, DP_HUEY_DB=os.path.join(directory, "huey.db"))
    os.environ.update(env)
    sys.path.insert(0, str(HERE))
    huey_app = importlib.import_module("_huey_app")
    consumer = subprocess.Popen(
        [sys.executable, "-m", "huey.bin.huey_consumer", "_huey_app.huey", "-w", "1",
         "-k", "process", "-q"],
        cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        square = huey_app.square
        first = square(-1)
        assert first.get(blocking=True, timeout=60) == 1  # the consumer is up
        if warmup:
            assert square.map(range(warmup)).get(blocking=True, timeout=120)[-1] == (
                (warmup - 1) ** 2
            )
        started = time.perf_counter()
        if workload == "map":
            got = list(square.map(range(n)).get(blocking=True, timeout=3600))
        else:
            results = [square(x) for x in range(n)]
            got = [r.get(blocking=True, timeout=3600) for r in results]
        took = time.perf_counter() - started
    finally:
        consumer.send_signal(signal.SIGINT)  # its graceful stop
        try:
            consumer.wait(60)
        except subprocess.TimeoutExpired:
            consumer.kill()
            consumer.wait(30)
    assert got == [x * x for x in range(n)], "wrong results"
    return took


def one_side(side: str, workload: str, n: int, warmup: int) -> None:
    """Measure one side in this process; print ``RESULT {json}``."""
    with tempfile.TemporaryDirectory(prefix="dp-durable-") as directory:
        if side == "huey":
            took = _huey_side(workload, n, warmup, directory)
        else:
            took = _distproc_side(side, workload, n, warmup, directory)
    print("RESULT " + json.dumps({"seconds": took, "rate": n / took}), flush=True)


# ------------------------------------------------------------------- the driver
def _child(side: str, workload: str, n: int, warmup: int, prefix: list[str]) -> dict[str, Any]:
    cmd = [*prefix, sys.executable, str(Path(__file__).resolve()), "--side", side,
           "--workload", workload, "--n", str(n), "--warmup", str(warmup)]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=HERE)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{side} {workload} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    result["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def count_fsyncs(side: str, workload: str, n: int) -> float | None:
    """fsync + fdatasync calls per task of every process of one untimed run (strace -f -c)."""
    if shutil.which("strace") is None:
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        prefix = ["strace", "-f", "-qq", "-c", "-e", "trace=fsync,fdatasync", "-o", out.name]
        _child(side, workload, n, 0, prefix)
        calls = 0
        for line in out.read().splitlines():
            parts = line.split()
            if parts and parts[-1] in ("fsync", "fdatasync") and parts[3].isdigit():
                calls += int(parts[3])
    return calls / n


def _size(side: str, workload: str, size: int) -> int:
    return min(size, HUEY_MAP_MAX) if (side, workload) == ("huey", "map") else size


def _range(values: list[float], fmt: Any = run.fmt) -> str:
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Durable task stores, side by side.")
    parser.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, smaller sizes")
    parser.add_argument("--sides", default=",".join(SIDES), help="a comma-separated subset")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=WARMUP, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        one_side(args.side, args.workload, args.n, args.warmup)
        return 0
    sizes = QUICK if args.quick else WORKLOADS
    runs = 2 if args.quick and args.runs == 5 else args.runs
    sides = [s for s in args.sides.split(",") if s]
    if "huey" in sides:
        try:
            importlib.import_module("huey")
        except ImportError:
            print("huey is not installed (pip install huey): its side is left out",
                  file=sys.stderr)  # fmt: skip
            sides.remove("huey")
    print("# Durable task stores: memory, SQLite FULL and NORMAL, Huey's SQLite\n")
    print(run.machine_text(run.machine(), []))
    print(f"- Runs: {runs} rounds, sides alternating (order turned by one each round); "
          f"sizes {sizes}; one worker process per side; CPUs not pinned\n")  # fmt: skip
    # rates[workload][side] = [rate of each round]; cpu likewise (s per 1,000 tasks)
    rates: dict[str, dict[str, list[float]]] = {w: {s: [] for s in sides} for w in sizes}
    cpu: dict[str, dict[str, list[float]]] = {w: {s: [] for s in sides} for w in sizes}
    for r in range(runs):
        order = sides[r % len(sides):] + sides[:r % len(sides)]
        for workload, size in sizes.items():
            for side in order:
                n = _size(side, workload, size)
                got = _child(side, workload, n, WARMUP, [])
                rates[workload][side].append(got["rate"])
                cpu[workload][side].append(1000 * got["cpu"] / (n + WARMUP + 1))
                print(f"round {r + 1}/{runs} {workload:6} {side:13} {got['rate']:>10,.0f} "
                      f"tasks/s", file=sys.stderr, flush=True)  # fmt: skip
    fsyncs = {(w, s): count_fsyncs(s, w, min(_size(s, w, n), 5_000)) for w, n in sizes.items()
              for s in sides}  # fmt: skip
    print("| workload | side | tasks/s | ratio to memory | CPU s per 1,000 tasks | fsyncs/task |")
    print("|---|---|---|---|---|---|")
    for workload, by_side in rates.items():
        for side, values in by_side.items():
            ratio = "-"
            if "memory" in by_side and side != "memory":
                paired = [a / b for a, b in zip(values, by_side["memory"], strict=True)]
                ratio = _range(paired, run.fmt_ratio)
            per = fsyncs[(workload, side)]
            size = _size(side, workload, sizes[workload])
            print(f"| {workload} (N={size:,}) | {side} | {_range(values)} | {ratio} "
                  f"| {_range(cpu[workload][side], lambda x: f'{x:.3f}')} "
                  f"| {'-' if per is None else f'{per:.4f}'} |")  # fmt: skip
    print()
    for (workload, side, against), bound in TARGETS.items():
        if side not in rates[workload] or against not in rates[workload]:
            print(f"- {workload}: {side} against {against}: not measured")
            continue
        paired = [a / b for a, b in zip(rates[workload][side], rates[workload][against],
                                        strict=True)]  # fmt: skip
        middle = statistics.median(paired)
        verdict = "met" if middle >= bound else "NOT met"
        print(f"- {workload}: {side} / {against} = {run.fmt_ratio(middle)} (rounds "
              f"{run.fmt_ratio(min(paired))}-{run.fmt_ratio(max(paired))}); target >= "
              f"{bound:g}x: {verdict}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
