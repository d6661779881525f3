"""Where an item's CPU time goes: each process's user and system time and context switches.

    python benchmarks/breakdown.py                      # (a) and (c), pinned to CPU 0, 3 runs
    python benchmarks/breakdown.py --only c --policies normal,client-batch,server-batch
    python benchmarks/breakdown.py --cpu none           # unpinned
    python benchmarks/breakdown.py --only c --busy-server-cpu --policies normal,server-batch

A companion to ``run.py`` for the targets that are not met (see RESULTS.md):
it measures the seed pattern (a), 10,000 items through one worker, and one
client's put+get pairs (c), and reports, per item or pair and for each
process (client or master, server, worker), the user and system CPU time from
``/proc/PID/stat`` and the voluntary and involuntary context switches summed
over ``/proc/PID/task/*/status``.  The stdlib and distproc alternate, each
measurement in a fresh process.

``--policies`` also measures distproc with a scheduling policy changed:
``server-batch`` puts the server's threads under ``SCHED_BATCH``,
``client-batch`` the client's (and, for (a), the worker's), so that their
wake-ups never preempt the running process.  They are experiments, not
settings: distproc changes no process's policy.  ``--busy-server-cpu`` shows
why not the server's: it runs (c) with the server on CPU 1 beside a busy
loop (a CPU-bound neighbour) and the client on CPU 0.

The clock ticks every 10 ms (``SC_CLK_TCK``): over a run of about a second a
per-item figure is good to about 1 µs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
#: run.py's measurements: the managers, the seed's worker, /proc helpers.
wl: Any = importlib.import_module("_workload")
#: Put+get pairs of (c), after WARMUP of them.
PAIRS = 20_000
WARMUP = 500
#: Pairs of (c) with ``--busy-server-cpu``: a server that waits out the busy loop's
#: time slice for every request takes milliseconds per pair.
BUSY_PAIRS = 2_000
#: Items of (a).
ITEMS = 10_000
POLICIES = ("normal", "server-batch", "client-batch")
TIMEOUT = 300.0

Sample = dict[str, float]


def task_ids(pid: int) -> list[int]:
    return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]


def sample(pid: int) -> Sample:
    """CPU seconds and context switches of ``pid`` so far (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    out = {"user": int(fields[11]) / tick, "sys": int(fields[12]) / tick, "vol": 0.0, "invol": 0.0}
    for tid in task_ids(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/status", encoding="ascii") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        out["vol"] += int(status["voluntary_ctxt_switches"])
        out["invol"] += int(status["nonvoluntary_ctxt_switches"])
    return out


def set_batch(pid: int) -> None:
    """Put every thread of ``pid`` under SCHED_BATCH (allowed without privileges)."""
    for tid in task_ids(pid):
        os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))


def per_unit(before: dict[str, Sample], after: dict[str, Sample], units: int) -> dict[str, Any]:
    """Per item or pair: µs of user and system time, and switches, of each process."""
    out: dict[str, Any] = {}
    for name in before:
        b, a = before[name], after[name]
        out[name] = {
            "user_us": (a["user"] - b["user"]) / units * 1e6,
            "sys_us": (a["sys"] - b["sys"]) / units * 1e6,
            "vol": (a["vol"] - b["vol"]) / units,
            "invol": (a["invol"] - b["invol"]) / units,
        }
    return out


def busy_loop() -> None:
    while True:
        pass


def measure_pairs(impl: str, policy: str, busy: bool = False) -> dict[str, Any]:
    """(c); ``busy``: the server on CPU 1 with a busy loop, the client on CPU 0."""
    if busy:
        os.sched_setaffinity(0, {1})  # the server forks from here
    manager = wl.sync_manager(impl)
    manager.start()
    hog: Any = None
    pairs = BUSY_PAIRS if busy else PAIRS
    try:
        if busy:
            hog = multiprocessing.get_context().Process(target=busy_loop, daemon=True)
            hog.start()
            os.sched_setaffinity(0, {0})
        q = manager.Queue()
        pids = {"client": os.getpid(), "server": wl.server_pid(manager)}
        if policy == "server-batch":
            set_batch(pids["server"])
        elif policy == "client-batch":
            set_batch(pids["client"])
        for _ in range(WARMUP):
            q.put(1)
            q.get()
        before = {name: sample(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        for _ in range(pairs):
            q.put(1)
            q.get()
        elapsed = time.perf_counter() - started
        after = {name: sample(pid) for name, pid in pids.items()}
        return {"us_per_unit": elapsed / pairs * 1e6, "procs": per_unit(before, after, pairs)}
    finally:
        if hog is not None:
            hog.terminate()
            hog.join()
        manager.shutdown()


def measure_seed(impl: str, policy: str) -> dict[str, Any]:
    manager = wl.queue_manager(impl)
    manager.start()
    ctx = multiprocessing.get_context()
    procs: list[Any] = []
    try:
        if policy == "client-batch":  # before the worker forks: it inherits the policy
            set_batch(os.getpid())
        task = manager.get_task_queue()
        result = manager.get_result_queue()
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=wl.seed_worker, args=(impl, "plain", manager.address, writer))
        proc.start()
        writer.close()
        procs.append(proc)
        if reader.recv() != "ready":
            raise RuntimeError("the worker did not start")
        task.qsize()
        result.qsize()
        pids = {"master": os.getpid(), "server": wl.server_pid(manager), "worker": proc.pid}
        if policy == "server-batch":
            set_batch(pids["server"])
        before = {name: sample(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        for i in range(ITEMS):
            task.put(i)
        task.put(None)
        total = sum(result.get(timeout=wl.GET_TIMEOUT) for _ in range(ITEMS))
        elapsed = time.perf_counter() - started
        after = {name: sample(pid) for name, pid in pids.items()}  # before the worker is reaped
        proc.join(wl.GET_TIMEOUT)
        if total != sum(i * i for i in range(ITEMS)):
            raise RuntimeError("the results do not add up")
        return {"us_per_unit": elapsed / ITEMS * 1e6, "procs": per_unit(before, after, ITEMS)}
    finally:
        wl.stop_processes(procs, manager)


def one(args: argparse.Namespace) -> int:
    if args.busy_server_cpu:
        result = measure_pairs(args.impl, args.policy, busy=True)
    else:
        if args.cpu != "none":
            os.sched_setaffinity(0, {int(args.cpu)})
        measure = measure_seed if args.one == "a" else measure_pairs
        result = measure(args.impl, args.policy)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def run_one(workload: str, impl: str, policy: str, cpu: str, busy: bool) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--one", workload]
    command += ["--impl", impl, "--policy", policy, "--cpu", cpu]
    if busy:
        command.append("--busy-server-cpu")
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.stderr.write(done.stderr)
        raise RuntimeError(f"{workload} {impl} {policy}: exit status {done.returncode}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def span(values: list[float], digits: int) -> str:
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}-{high}"


def report(workload: str, where: str, runs: dict[str, list[dict[str, Any]]]) -> None:
    unit = "item" if workload == "a" else "pair"
    print(f"\n({workload}) per {unit}, {where}, {len(next(iter(runs.values())))} runs each")
    print("(CPU: user+system µs; switches: voluntary+involuntary; min-max over runs)\n")
    names = list(next(iter(runs.values()))[0]["procs"])
    header = ["side", f"µs per {unit}"]
    for name in names:
        header += [f"{name} CPU", f"{name} switches"]
    header += ["user, all", "system, all"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for side, results in runs.items():
        row = [side, span([r["us_per_unit"] for r in results], 1)]
        for name in names:
            procs = [r["procs"][name] for r in results]
            row.append(span([p["user_us"] + p["sys_us"] for p in procs], 0))
            row.append(
                span([p["vol"] for p in procs], 2) + " + " + span([p["invol"] for p in procs], 2)
            )
        users = [sum(p["user_us"] for p in r["procs"].values()) for r in results]
        systems = [sum(p["sys_us"] for p in r["procs"].values()) for r in results]
        row += [span(users, 0), span(systems, 0)]
        print("| " + " | ".join(row) + " |")
    medians = {side: statistics.median(r["us_per_unit"] for r in rs) for side, rs in runs.items()}
    stdlib = medians.get("stdlib")
    if stdlib:
        ratios = ", ".join(f"{side} {stdlib / m:.2f}x" for side, m in medians.items())
        print(f"\nstdlib/side of the median µs per {unit}: {ratios}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="a,c", help="workloads: a, c or a,c")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu", default="0", help="the CPU to pin every process to, or none")
    parser.add_argument(
        "--policies",
        default="normal",
        help=f"distproc's sides, from {', '.join(POLICIES)} (comma-separated)",
    )
    parser.add_argument(
        "--busy-server-cpu",
        action="store_true",
        help="(c) only: the server on CPU 1 beside a busy loop, the client on CPU 0",
    )
    parser.add_argument("--one", choices=["a", "c"], help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=["stdlib", "distproc"], help=argparse.SUPPRESS)
    parser.add_argument("--policy", choices=POLICIES, default="normal", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return one(args)
    policies = [p for p in args.policies.split(",") if p]
    unknown = set(policies) - set(POLICIES)
    if unknown:
        parser.error(f"unknown policy: {', '.join(sorted(unknown))}")
    sides = [("stdlib", "normal"), *(("distproc", p) for p in policies)]
    for workload in [w for w in args.only.split(",") if w]:
        if workload not in ("a", "c"):
            parser.error(f"unknown workload {workload!r}: a or c")
        if args.busy_server_cpu and workload != "c":
            parser.error("--busy-server-cpu is for (c) only: --only c")
        runs: dict[str, list[dict[str, Any]]] = {}
        for i in range(args.runs):
            for impl, policy in sides:
                side = impl if policy == "normal" else f"{impl}, {policy}"
                result = run_one(workload, impl, policy, args.cpu, args.busy_server_cpu)
                runs.setdefault(side, []).append(result)
                print(
                    f"({workload}) run {i + 1}/{args.runs}, {side}: {result['us_per_unit']:.1f} µs",
                    file=sys.stderr,
                    flush=True,
                )
        if args.busy_server_cpu:
            where = "server on CPU 1 with a busy loop, client on CPU 0"
        else:
            where = "unpinned" if args.cpu == "none" else f"pinned to CPU {args.cpu}"
        report(workload, where, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
