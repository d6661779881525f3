"""``distproc map`` against a ``multiprocessing.Pool.imap`` script, on the README's main job.

    python benchmarks/map_vs_pool.py                  # 5 runs of each size, 3 of the slow lines
    python benchmarks/map_vs_pool.py --quick          # a short smoke run
    python benchmarks/map_vs_pool.py --only squares --sizes 1000000 --runs 7
    python benchmarks/map_vs_pool.py --also 'proto=python /tmp/proto.py {fn} -w {workers}'

The job is the README's: N lines (``seq 1 N``) written into the command's
stdin through a pipe, ``examples.squares:square`` called on each, one JSON
result per line on stdout, here a file.  Both sides get the same number of
worker processes (``-w``), and each run's output is compared byte for byte
with the expected one.  The sides run in turns, one run of each per round,
the side that goes first changing every round, after one warm-up run of each
(not counted).  The *slow lines* job calls ``benchmarks._tasks:sleep_1ms``
(a 1 ms sleep) on 100,000 lines with two workers, against the ideal rate of
2 x 1,000 lines/s.

Each run is a fresh command, in this environment less the settings that a
user's shell does not have and that change the figures (``DROPPED_ENV``:
an unbuffered stdout, no bytecode cache).  While it runs, the process tree under it is
sampled every ``SAMPLE_EVERY`` s from ``/proc``: each process's user and
system time (``/proc/PID/stat``), its peak RSS (``VmHWM``) and the CPUs it
may use (``Cpus_allowed_list``).  When the command exits, ``wait4`` gives
the whole tree's CPU time exactly (every process of both sides is reaped by
its parent); the per-process figures are the last samples, so they miss each
process's last few ms, and the report shows how much that is.  Peak RSS is
``VmHWM`` (it only grows) as last sampled; ``wait4``'s ``ru_maxrss`` is not
used, as it also counts this harness's memory from before the ``exec``.
``/proc/stat`` gives the CPU time that the rest of the machine used
meanwhile.  A command that runs past ``TIMEOUT`` is stopped with every
process of its tree, by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
#: run.py's reporting and machine description, _workload.py's /proc and sleep helpers.
rp: Any = importlib.import_module("run")
wl: Any = importlib.import_module("_workload")
REPO = HERE.parent
POOL_SCRIPT = HERE / "_pool_map.py"
SAMPLE_EVERY = 0.02
TIMEOUT = 600.0
TICK = os.sysconf("SC_CLK_TCK")
SQUARE = "examples.squares:square"
SLEEP_1MS = "benchmarks._tasks:sleep_1ms"
#: Below this many lines, CPU time is shown per run (ms), not per line.
PER_LINE_FROM = 1000
#: Settings of this environment that a user's shell does not have, and that change what
#: is measured: an unbuffered stdout makes a write per line, and no bytecode cache
#: makes every start compile the sources again.
DROPPED_ENV = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")


def user_env() -> dict[str, str]:
    """This process's environment without :data:`DROPPED_ENV`."""
    return {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}


# ------------------------------------------------------------------ the jobs
@dataclasses.dataclass(frozen=True)
class Job:
    """``fn`` over the lines ``1..lines``; ``expect(i)`` is line i's output."""

    key: str
    title: str
    fn: str
    lines: int
    workers: int
    expect: Callable[[int], int]

    def stdin(self) -> bytes:
        return "".join(f"{i}\n" for i in range(1, self.lines + 1)).encode()

    def stdout(self) -> bytes:
        return "".join(f"{self.expect(i)}\n" for i in range(1, self.lines + 1)).encode()


def _square(i: int) -> int:
    return i * i


def _same(i: int) -> int:
    return i


@dataclasses.dataclass(frozen=True)
class Side:
    """One command measured: ``{fn}`` and ``{workers}`` in ``template`` are filled in."""

    name: str
    template: list[str]

    def command(self, job: Job) -> list[str]:
        return [part.format(fn=job.fn, workers=job.workers) for part in self.template]


def distproc_command() -> list[str]:
    """The console script a user types, beside this Python; else ``python -m distproc``."""
    script = Path(sys.executable).parent / "distproc"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "distproc"]


def default_sides() -> list[Side]:
    pool = Side("pool", [sys.executable, str(POOL_SCRIPT), "{fn}", "-w", "{workers}"])
    distproc = Side("distproc", [*distproc_command(), "map", "{fn}", "-w", "{workers}"])
    return [pool, distproc]


# ------------------------------------------------------------ measuring a run
@dataclasses.dataclass
class Proc:
    """What the samples saw of one process of the tree."""

    pid: int
    parent: int
    started: int  # start time in ticks since boot: tells a reused pid apart
    cpu: float = 0.0
    hwm_kib: int = 0
    cpus: str = "?"
    alive: bool = True


def _stat(pid: int) -> tuple[int, int, float] | None:
    """(parent pid, start time, user+system seconds) of ``pid``, if it exists."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / TICK


def _machine_busy() -> float:
    """CPU seconds that every CPU of the machine has spent busy since boot."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / TICK


class Sampler:
    """Follows the process tree under ``root`` in ``/proc`` until told to stop."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.procs: dict[int, Proc] = {}
        #: Pids seen outside the tree: a process never joins a tree after its fork.
        self.others: set[int] = set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def _discover(self) -> None:
        """New children of the tree: pids above the root's (no wrap-around is expected
        within a run), whose parent is in the tree."""
        try:
            names = os.listdir("/proc")
        except OSError:
            return
        for name in names:
            if not name.isdigit():
                continue
            pid = int(name)
            if pid <= self.root or pid in self.procs or pid in self.others:
                continue
            stat = _stat(pid)
            if stat is None:
                continue
            if stat[0] in self.procs and self.procs[stat[0]].alive:
                self.procs[pid] = Proc(pid, stat[0], stat[1], stat[2])
            else:
                self.others.add(pid)

    def _sample(self, proc: Proc) -> None:
        stat = _stat(proc.pid)
        if stat is None or stat[1] != proc.started:
            proc.alive = False
            return
        proc.cpu = stat[2]
        try:
            status = wl.proc_status(proc.pid)
        except OSError:
            proc.alive = False
            return
        hwm = status.get("VmHWM", "")  # absent once the process is a zombie
        if hwm:
            proc.hwm_kib = max(proc.hwm_kib, int(hwm.split()[0]))
            proc.cpus = status.get("Cpus_allowed_list", proc.cpus)

    def _loop(self) -> None:
        stat = _stat(self.root)
        if stat is None:
            return
        self.procs[self.root] = Proc(self.root, stat[0], stat[1], stat[2])
        while True:
            self._discover()
            for proc in list(self.procs.values()):
                if proc.alive:
                    self._sample(proc)
            if self.done.wait(SAMPLE_EVERY):
                return

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def still_running(self) -> list[int]:
        """Processes of the tree that outlived its root (same pid, same start time)."""
        out = []
        for proc in self.procs.values():
            stat = _stat(proc.pid)
            if proc.pid != self.root and stat is not None and stat[1] == proc.started:
                out.append(proc.pid)
        return out


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _background(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def run_once(side: Side, job: Job, data: bytes, expected: bytes, workdir: Path) -> dict[str, Any]:
    """One run of ``side`` on ``job``: wall time, CPU per process, peak RSS, output checked."""
    out_path = workdir / f"{side.name}.out"
    harness_before = resource.getrusage(resource.RUSAGE_SELF)
    busy_before = _machine_busy()
    with open(out_path, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            side.command(job), stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE,
            cwd=REPO, env=user_env(),
        )  # fmt: skip
    assert proc.stdin is not None and proc.stderr is not None
    stdin, stderr = proc.stdin, proc.stderr
    sampler = Sampler(proc.pid)
    sampler.start()
    errors: list[bytes] = []
    ended: list[tuple[float, int, Any]] = []

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError):
            stdin.write(data)
        with contextlib.suppress(BrokenPipeError):
            stdin.close()

    def reap() -> None:
        _, status, usage = os.wait4(proc.pid, 0)
        ended.append((time.perf_counter(), status, usage))

    threads = [_background(feed), _background(lambda: errors.append(stderr.read()))]
    reaper = _background(reap)
    reaper.join(TIMEOUT)
    timed_out = reaper.is_alive()
    if timed_out:
        _kill([p.pid for p in sampler.procs.values() if p.alive])
        reaper.join()
    sampler.stop()
    left = sampler.still_running()
    _kill(left)
    for thread in threads:
        thread.join()
    end, status, usage = ended[0]
    returncode = os.waitstatus_to_exitcode(status)
    proc.returncode = returncode  # reaped here, not by Popen
    harness_after = resource.getrusage(resource.RUSAGE_SELF)
    harness = sum(getattr(harness_after, f) - getattr(harness_before, f)
                  for f in ("ru_utime", "ru_stime"))  # fmt: skip
    problem = None
    if timed_out:
        problem = f"killed after {TIMEOUT:.0f} s"
    elif returncode != 0:
        tail = errors[0].decode(errors="replace").strip().splitlines()[-3:] if errors else []
        problem = f"exit status {returncode}: {' / '.join(tail)}"
    elif left:
        problem = f"{len(left)} process(es) outlived the command (killed): {left}"
    else:
        problem = _compare(out_path.read_bytes(), expected)
    total_cpu = usage.ru_utime + usage.ru_stime
    procs = sorted(sampler.procs.values(), key=lambda p: p.pid)
    master, workers = (procs[0], procs[1:]) if procs else (Proc(proc.pid, 0, 0), [])
    return {
        "side": side.name,
        "wall": end - started,
        "cpu_total": total_cpu,
        "cpu_master": master.cpu,
        "cpu_workers": [p.cpu for p in workers],
        "cpu_unsampled": max(0.0, total_cpu - sum(p.cpu for p in procs)),
        "peak_rss_kib": max((p.hwm_kib for p in procs), default=0),
        "rss_master_kib": master.hwm_kib,
        "rss_workers_kib": [p.hwm_kib for p in workers],
        "processes": len(procs),
        "cpus": sorted({p.cpus for p in procs if p.cpus != "?"}),
        "others_cpu": max(0.0, _machine_busy() - busy_before - total_cpu - harness),
        "harness_cpu": harness,
        "problem": problem,
    }


def _compare(got: bytes, expected: bytes) -> str | None:
    if got == expected:
        return None
    got_lines, want_lines = got.split(b"\n"), expected.split(b"\n")
    for number, (a, b) in enumerate(zip(got_lines, want_lines, strict=False), 1):
        if a != b:
            return f"output differs at line {number}: {a[:60]!r}, expected {b[:60]!r}"
    return f"output has {len(got_lines) - 1} lines, expected {len(want_lines) - 1}"


def sleep_cap() -> float:
    """How long a 1 ms ``time.sleep`` takes here: the ceiling of the slow-lines rate."""
    tasks = importlib.import_module("_tasks")
    slept: float = wl.sleep_duration(tasks.SLEEP, 200)
    return slept


# ---------------------------------------------------------------- reporting
def span(values: list[float], digits: int = 2) -> str:
    """``median (min-max)``."""
    med = statistics.median(values)
    return f"{med:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _per_line(job: Job, seconds: list[float]) -> str:
    if job.lines >= PER_LINE_FROM:
        return span([s / job.lines * 1e6 for s in seconds], 2)
    return span([s * 1e3 for s in seconds], 0) + " ms"


def report_job(job: Job, runs: dict[str, list[dict[str, Any]]], baseline: str) -> list[str]:
    unit = "µs/line" if job.lines >= PER_LINE_FROM else "ms/run"
    out = [
        f"\n### {job.title}: {job.lines:,} line(s), -w {job.workers}, {len(runs[baseline])} runs "
        "of each side\n",
        f"| side | wall s, median (min-max) | {baseline}/side wall, medians (paired min-max) "
        f"| CPU {unit}: master | each worker | all (wait4) | not sampled | peak RSS of "
        "the largest process, MiB | master peak RSS, MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = runs[baseline]
    base_wall = statistics.median(r["wall"] for r in base)
    for name, results in runs.items():
        walls = [r["wall"] for r in results]
        paired = [b["wall"] / r["wall"] for b, r in zip(base, results, strict=True)]
        ratio = "-" if name == baseline else (
            f"**{base_wall / statistics.median(walls):.2f}x** "
            f"({min(paired):.2f}x-{max(paired):.2f}x)"
        )  # fmt: skip
        each = [c for r in results for c in r["cpu_workers"]]
        row = [
            name,
            span(walls, 3),
            ratio,
            _per_line(job, [r["cpu_master"] for r in results]),
            _per_line(job, each) if each else "-",
            _per_line(job, [r["cpu_total"] for r in results]),
            _per_line(job, [r["cpu_unsampled"] for r in results]),
            span([r["peak_rss_kib"] / 1024 for r in results], 1),
            span([r["rss_master_kib"] / 1024 for r in results], 1),
        ]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    for name, results in runs.items():
        busy = [r["cpu_total"] / r["wall"] for r in results]
        others = [r["others_cpu"] / r["wall"] for r in results]
        procs = sorted({r["processes"] for r in results})
        cpus = sorted({c for r in results for c in r["cpus"]})
        out.append(
            f"- {name}: {'/'.join(map(str, procs))} processes allowed CPUs {', '.join(cpus)}; "
            f"they kept {span(busy)} CPUs busy on average; the rest of the machine "
            f"{span(others)} CPUs; this harness {span([r['harness_cpu'] for r in results], 3)} "
            "CPU s per run"
        )
    return out


def report_slow(job: Job, runs: dict[str, list[dict[str, Any]]], cap: float) -> list[str]:
    ideal = job.workers * 1000.0
    ceiling = job.workers / cap
    out = [
        f"\nSlow lines: ideal {ideal:,.0f} lines/s ({job.workers} workers x 1 ms); a 1 ms "
        f"sleep takes {cap * 1e6:,.0f} µs here, so sleeping alone reaches {ceiling:,.0f} "
        f"lines/s ({ceiling / ideal:.1%} of the ideal).",
    ]
    for name, results in runs.items():
        rates = [job.lines / r["wall"] for r in results]
        shares = [rate / ideal * 100 for rate in rates]
        out.append(f"- {name}: {span(rates, 0)} lines/s, {span(shares, 1)} % of the ideal")
    return out


def targets(
    jobs: dict[str, Job], results: dict[str, dict[str, list[dict[str, Any]]]], side: str
) -> list[str]:
    """The issue's targets for ``side`` (the pool script is the reference)."""
    out = ["\n### Targets (distproc's side: " + side + ")\n"]

    def med(key: str, name: str, field: str) -> float | None:
        runs = results.get(key, {}).get(name)
        return statistics.median(r[field] for r in runs) if runs else None

    big, small = "squares-1000000", "squares-100000"
    pool_wall, wall = med(big, "pool", "wall"), med(big, side, "wall")
    if pool_wall and wall:
        speed = pool_wall / wall
        out.append(f"- 1,000,000 lines at least 3x the pool script: {speed:.2f}x, "
                   f"{'met' if speed >= 3 else 'NOT met'}")  # fmt: skip
    rss_big, rss_small = med(big, side, "peak_rss_kib"), med(small, side, "peak_rss_kib")
    pool_rss = med(big, "pool", "peak_rss_kib")
    if rss_big and rss_small and pool_rss:
        flat = rss_big <= 1.5 * rss_small and rss_big <= pool_rss
        out.append(
            f"- peak RSS at 1,000,000 at most 1.5x that at 100,000 and at most the pool "
            f"script's: {rss_big / 1024:.1f} MiB against {rss_small / 1024:.1f} MiB "
            f"({rss_big / rss_small:.2f}x) and {pool_rss / 1024:.1f} MiB, "
            f"{'met' if flat else 'NOT met'}"
        )
    for key, limit, what in (("squares-1", 0.4, "one line"), ("squares-0", 0.3, "empty input")):
        value = med(key, side, "wall")
        if value is not None:
            out.append(f"- {what} in at most {limit} s: {value:.3f} s, "
                       f"{'met' if value <= limit else 'NOT met'}")  # fmt: skip
    slow = jobs.get("slow")
    if slow is not None and results.get("slow", {}).get(side):
        share = statistics.median(slow.lines / r["wall"] for r in results["slow"][side]) / (
            slow.workers * 1000
        )
        out.append(f"- slow lines at 90 % of the ideal rate or better: {share:.1%}, "
                   f"{'met' if share >= 0.9 else 'NOT met'}")  # fmt: skip
    return out


# ------------------------------------------------------------------- driver
def parse_sides(also: list[str]) -> list[Side]:
    sides = default_sides()
    for spec in also:
        name, eq, command = spec.partition("=")
        if not eq or not name or not command:
            raise SystemExit(f"--also takes NAME=COMMAND, not {spec!r}")
        sides.append(Side(name, shlex.split(command)))
    return sides


def make_jobs(args: argparse.Namespace) -> list[Job]:
    jobs = []
    if "squares" in args.only:
        for n in args.sizes:
            jobs.append(Job(f"squares-{n}", "squares", SQUARE, n, args.workers, _square))
    if "slow" in args.only:
        jobs.append(Job("slow", "slow lines (1 ms each)", SLEEP_1MS, args.slow_lines, 2, _same))
    return jobs


def run_job(
    job: Job, sides: list[Side], runs: int, workdir: Path
) -> tuple[dict[str, list[dict[str, Any]]], bool]:
    data, expected = job.stdin(), job.stdout()
    results: dict[str, list[dict[str, Any]]] = {side.name: [] for side in sides}
    ok = True
    for i in range(runs):
        order = sides if i % 2 == 0 else sides[::-1]
        for side in order:
            r = run_once(side, job, data, expected, workdir)
            results[side.name].append(r)
            note = f"  PROBLEM: {r['problem']}" if r["problem"] else ""
            ok = ok and not r["problem"]
            print(f"{job.key} run {i + 1}/{runs} {side.name}: {r['wall']:.3f} s, "
                  f"{r['cpu_total']:.2f} CPU s, {r['peak_rss_kib'] / 1024:.1f} MiB{note}",
                  file=sys.stderr, flush=True)  # fmt: skip
    return results, ok


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 runs; sizes 0, 1, 100,000; 10,000 slow lines")  # fmt: skip
    parser.add_argument("--runs", type=int, help="runs of each side per size (default 5)")
    parser.add_argument("--slow-runs", type=int, help="runs of the slow lines (default 3)")
    parser.add_argument("--sizes", help="line counts, comma-separated "
                        "(default 0,1,100000,1000000)")  # fmt: skip
    parser.add_argument("--slow-lines", type=int, help="lines of 1 ms (default 100,000)")
    parser.add_argument("--only", default="squares,slow", help="squares, slow, or both")
    parser.add_argument("-w", "--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes of each side (default: the CPU count)")  # fmt: skip
    parser.add_argument("--also", action="append", default=[], metavar="NAME=COMMAND",
                        help="another side: a command with {fn} and {workers} in it")  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="also write every run to FILE")
    args = parser.parse_args(argv)
    args.runs = args.runs or (2 if args.quick else 5)
    args.slow_runs = args.slow_runs or (2 if args.quick else 3)
    sizes = args.sizes or ("0,1,100000" if args.quick else "0,1,100000,1000000")
    args.sizes = [int(s) for s in sizes.split(",") if s]
    args.slow_lines = args.slow_lines or (10_000 if args.quick else 100_000)
    args.only = {w for w in args.only.split(",") if w}
    if args.only - {"squares", "slow"}:
        parser.error("--only takes squares, slow or both")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sides = parse_sides(args.also)
    m = rp.machine()
    print("## distproc map against a multiprocessing.Pool.imap script\n")
    print(rp.machine_text(m, []))
    print(f"- Sides: {'; '.join(f'{s.name}: `{shlex.join(s.template)}`' for s in sides)}")
    dropped = [k for k in DROPPED_ENV if k in os.environ]
    if dropped:
        print(f"- Left out of the commands' environment: {', '.join(dropped)} (set here, not "
              "in a user's shell)")  # fmt: skip
    print("- CPU placement: no pinning; each process may run on any CPU it is allowed "
          "(listed per job below)")  # fmt: skip
    print(f"- Runs: {args.runs} of each side per size ({args.slow_runs} of the slow lines), "
          "taking turns, the first side changing every round, after a warm-up run of each")
    jobs = make_jobs(args)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    ok = True
    cap = sleep_cap() if any(j.key == "slow" for j in jobs) else 0.0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="map-vs-pool-") as tmp:
        workdir = Path(tmp)
        warm = Job("warm-up", "warm-up", SQUARE, 1000, args.workers, _square)
        for side in sides:
            r = run_once(side, warm, warm.stdin(), warm.stdout(), workdir)
            if r["problem"]:
                print(f"warm-up of {side.name}: {r['problem']}", file=sys.stderr)
                ok = False
        for job in jobs:
            runs = args.slow_runs if job.key == "slow" else args.runs
            results[job.key], job_ok = run_job(job, sides, runs, workdir)
            ok = ok and job_ok
    for job in jobs:
        for line in report_job(job, results[job.key], "pool"):
            print(line)
        if job.key == "slow":
            for line in report_slow(job, results[job.key], cap):
                print(line)
    by_key = {job.key: job for job in jobs}
    for side in sides[1:]:
        for line in targets(by_key, results, side.name):
            print(line)
    after = rp.source_state()
    print(f"\nWall time of the whole run: {time.perf_counter() - started:.0f} s; load average "
          f"at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}.")  # fmt: skip
    changed = after["src_digest"] != m["src_digest"]
    if changed:
        print("\n**distproc's sources changed during the run: do not use these figures.**")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": m, "sides": [dataclasses.asdict(s) for s in sides],
             "results": results}, indent=1))  # fmt: skip
    if not ok:
        print("\nSome runs failed (see PROBLEM above): their figures are in the tables all the "
              "same.")  # fmt: skip
    return 0 if ok and not changed else 1


if __name__ == "__main__":
    sys.exit(main())
