"""distproc against the stdlib's multiprocessing.managers, side by side in one run.

    python benchmarks/run.py                  # every workload, 5 runs, unpinned and pinned
    python benchmarks/run.py --quick          # a short smoke run
    python benchmarks/run.py --only a,c --pin --runs 7 --json out.json
    python benchmarks/run.py --only tasks     # the task system: workloads (h) and (i)

Each measurement is a fresh process, ``benchmarks/_workload.py``, that starts
its own manager on 127.0.0.1 port 0, measures, shuts everything down and
prints one JSON line.  For each workload the two implementations alternate
(stdlib, distproc, stdlib, distproc, ...), so that the noise of a shared
machine falls on both.  Pinned measurements run under ``taskset -c CPU``:
the client, the server (forked by ``start()``) and any worker processes all
share that one CPU.  The Markdown table printed at the end can be pasted into
``benchmarks/RESULTS.md``; README.md there explains how to read it.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "_workload.py"
REPO = HERE.parent
#: A measurement that takes longer than this is killed (with its whole process group).
TIMEOUT = 600.0

Result = dict[str, Any]
#: (implementation, variant) of one measurement.
Side = tuple[str, str]
STDLIB: Side = ("stdlib", "plain")
DISTPROC: Side = ("distproc", "plain")
BATCHED: Side = ("distproc", "batched")
#: ``Executor.map(..., chunksize=1)``: one task per call, no batching.
CHUNK1: Side = ("distproc", "chunksize1")
#: ``--only`` takes these names for sets of workloads.
WORKLOAD_SETS = {"managers": "abcdefg", "tasks": "hi", "all": "abcdefghi"}


@dataclass(frozen=True)
class Workload:
    """One ``_workload.py --workload LETTER ARGS``: the sides it runs each round."""

    key: str
    title: str
    sides: tuple[Side, ...]
    args: tuple[str, ...] = ()
    #: The workload letter of ``--only`` and of ``_workload.py`` (``key`` if not given).
    letter: str = ""
    #: At most this many rounds, whatever ``--runs`` says (0: no limit).
    max_runs: int = 0
    #: Only in the first placement asked for (unpinned, unless ``--pin``).
    one_placement: bool = False

    @property
    def workload(self) -> str:
        return self.letter or self.key


@dataclass(frozen=True)
class Case:
    """A row of the table (one per placement): a metric, stdlib against one distproc side."""

    workload: str
    name: str
    metric: str
    unit: str
    higher_is_better: bool
    distproc: Side = DISTPROC
    #: The distproc/stdlib ratio (as a speed-up) the project must reach, if any.
    target_ratio: float | None = None
    #: The largest value distproc may have in any run, if the target is absolute.
    target_max: float | None = None
    #: The smallest median distproc may have, if the target is absolute.
    target_min: float | None = None
    #: The target holds in this placement only (all, if empty).
    target_placement: str = ""
    #: The ratio is meaningless (counts compared as they are).
    no_ratio: bool = False


CASES = (
    Case(
        "a", "(a) seed, 1 worker, unchanged code", "items_per_s", "items/s", True, target_ratio=2.0
    ),
    Case(
        "a",
        "(a) seed, 1 worker, batched",
        "items_per_s",
        "items/s",
        True,
        BATCHED,
        target_ratio=20.0,
    ),
    Case(
        "a",
        "(a) seed, 1 worker, unchanged code: CPU time per item",
        "cpu_us_per_item",
        "µs CPU",
        False,
    ),
    Case("b", "(b) seed, 4 workers, unchanged code", "items_per_s", "items/s", True),
    Case("b", "(b) seed, 4 workers, batched", "items_per_s", "items/s", True, BATCHED),
    Case("c", "(c) put+get, 1 client", "pairs_per_s", "pairs/s", True, target_ratio=1.5),
    Case("c", "(c) put+get, 1 client: CPU time per pair", "cpu_us_per_pair", "µs CPU", False),
    Case("d", "(d) put+get, 8 threads, 1 proxy", "pairs_per_s", "pairs/s", True, target_ratio=3.0),
    Case(
        "d",
        "(d) put+get, 8 threads, 1 proxy: CPU time per pair",
        "cpu_us_per_pair",
        "µs CPU",
        False,
    ),
    Case("e", "(e) put+get 100 B", "us_per_pair_100B", "µs/pair", False),
    Case("e", "(e) put+get 17 KB", "us_per_pair_17KB", "µs/pair", False, target_ratio=100.0),
    Case("e", "(e) put+get 1 MiB", "us_per_pair_1MiB", "µs/pair", False, target_ratio=2.0),
    Case("e", "(e) put+get 100 B: CPU time per pair", "cpu_us_per_pair_100B", "µs CPU", False),
    Case("e", "(e) put+get 1 MiB: CPU time per pair", "cpu_us_per_pair_1MiB", "µs CPU", False),
    Case(
        "f",
        "(f) {clients} idle client threads: server threads",
        "server_threads",
        "threads",
        False,
        target_max=16,
        no_ratio=True,
    ),
    Case(
        "f",
        "(f) {clients} idle client threads: server RSS",
        "server_rss_mb",
        "MiB",
        False,
        target_ratio=4.0,
    ),
    Case("f", "(f) {clients} idle client threads: RSS they add", "added_rss_mb", "MiB", False),
    Case(
        "f",
        "(f) {clients} idle client threads: server connections",
        "server_connections",
        "connections",
        False,
        no_ratio=True,
    ),
    Case(
        "fp",
        "(f) {clients} idle client processes: server threads",
        "server_threads",
        "threads",
        False,
        target_max=16,
        no_ratio=True,
    ),
    Case(
        "fp",
        "(f) {clients} idle client processes: server RSS",
        "server_rss_mb",
        "MiB",
        False,
        target_ratio=4.0,
    ),
    Case("fp", "(f) {clients} idle client processes: RSS they add", "added_rss_mb", "MiB", False),
    Case("g", "(g) proxies created+dropped", "proxies_per_s", "proxies/s", True, target_ratio=5.0),
    Case("h", "(h) no-op tasks, 1 worker: map", "tasks_per_s", "tasks/s", True, target_ratio=20.0),
    Case(
        "h", "(h) no-op tasks, 1 worker: map, chunksize=1", "tasks_per_s", "tasks/s", True, CHUNK1
    ),
    Case("i", "(i) 1 ms tasks, 2 workers: map", "tasks_per_s", "tasks/s", True),
    Case(
        "i", "(i) 1 ms tasks, 2 workers: map, chunksize=1", "tasks_per_s", "tasks/s", True, CHUNK1
    ),
    Case(
        "i",
        "(i) 1 ms tasks, 2 workers: map, share of ideal",
        "pct_of_ideal",
        "% of 2,000/s",
        True,
        target_min=90.0,
        target_placement="unpinned",
        no_ratio=True,
    ),
    Case(
        "i",
        "(i) 1 ms tasks, 2 workers: map, chunksize=1, share of ideal",
        "pct_of_ideal",
        "% of 2,000/s",
        True,
        CHUNK1,
        no_ratio=True,
    ),
)


def idle_clients(quick: bool) -> int:
    return 250 if quick else 1000


def workloads(quick: bool) -> list[Workload]:
    duration = "0.3" if quick else "0.5"
    clients = str(idle_clients(quick))
    seed = (STDLIB, DISTPROC, BATCHED)
    pair = (STDLIB, DISTPROC)
    tasks = (STDLIB, DISTPROC, CHUNK1)
    return [
        Workload("a", "seed pattern, 1 worker", seed, ("--n", "2000" if quick else "10000")),
        Workload(
            "b",
            "seed pattern, 4 workers",
            seed,
            ("--n", "20000" if quick else "100000", "--workers", "4"),
        ),
        Workload("c", "put+get pairs, 1 client", pair, ("--duration", duration)),
        Workload("d", "put+get pairs, 8 threads", pair, ("--duration", duration, "--threads", "8")),
        Workload("e", "payload sizes", pair, ("--duration", duration)),
        Workload(
            "f",
            f"{clients} idle client threads in 4 processes",
            pair,
            ("--clients", clients, "--clients-as", "threads", "--processes", "4"),
        ),
        # The same with one connection per client: distproc's clients share one
        # connection per process, so the threads above reach its server on 4.
        # Memory and thread counts neither vary between runs nor depend on the
        # placement, and 1000 forks are slow: 2 rounds, one placement.
        Workload(
            "fp",
            f"{clients} idle client processes",
            pair,
            ("--clients", clients, "--clients-as", "processes"),
            letter="f",
            max_runs=1 if quick else 2,
            one_placement=True,
        ),
        Workload("g", "proxy creation", pair, ("--duration", duration)),
        # The task system against the seed pattern on the stdlib, timed after a warm-up.
        Workload(
            "h",
            "no-op tasks, 1 worker",
            tasks,
            ("--n", "20000" if quick else "100000", "--workers", "1", "--warmup", "1000"),
        ),
        Workload(
            "i",
            "1 ms tasks, 2 workers",
            tasks,
            ("--n", "2000" if quick else "10000", "--workers", "2", "--warmup", "200"),
        ),
    ]


# ------------------------------------------------------------------ placement
@dataclass(frozen=True)
class Placement:
    name: str
    prefix: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    describe: str = ""


def placements(mode: str) -> list[Placement]:
    allowed = sorted(os.sched_getaffinity(0))
    cpu = 0 if 0 in allowed else allowed[0]
    unpinned = Placement(
        "unpinned", describe=f"no pinning: every process may run on CPUs {cpu_list(allowed)}"
    )
    if shutil.which("taskset"):
        pinned = Placement(
            "pinned",
            prefix=("taskset", "-c", str(cpu)),
            describe=f"taskset -c {cpu}: client, server and workers all on CPU {cpu}",
        )
    else:
        pinned = Placement(
            "pinned",
            extra=("--cpu", str(cpu)),
            describe=f"sched_setaffinity({{{cpu}}}): client, server and workers on CPU {cpu}",
        )
    return {"both": [unpinned, pinned], "pin": [pinned], "no-pin": [unpinned]}[mode]


def cpu_list(cpus: list[int]) -> str:
    if cpus and cpus == list(range(cpus[0], cpus[-1] + 1)) and len(cpus) > 1:
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(str(c) for c in cpus)


# ---------------------------------------------------------------- measuring
def measure(
    placement: Placement, workload: Workload, side: Side, python: str = sys.executable
) -> Result:
    """One measurement in a fresh process of ``python`` (this one's, unless told)."""
    impl, variant = side
    cmd = [
        *placement.prefix,
        python,
        str(WORKLOAD),
        "--workload", workload.workload,
        "--impl", impl,
        "--variant", variant,
        *workload.args,
        *placement.extra,
    ]  # fmt: skip
    started = time.monotonic()
    # A session of its own: on a timeout the whole tree (server, workers) goes.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return {"error": f"timed out after {TIMEOUT:.0f} s", "wall_s": TIMEOUT}
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if not lines:
        tail = " | ".join(err.strip().splitlines()[-3:])
        return {"error": f"exit code {proc.returncode}, no result: {tail}"}
    result: Result = json.loads(lines[-1][len("RESULT ") :])
    result["wall_s"] = time.monotonic() - started
    if "error" in result:
        sys.stderr.write(err)
    return result


def headline(workload: Workload, result: Result) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    if "na" in result:
        return f"n/a ({result['na']})"
    m = result["metrics"]
    shown = {c.metric: c.unit for c in CASES if c.workload == workload.key and c.metric in m}
    return ", ".join(f"{fmt(m[metric])} {unit}" for metric, unit in shown.items())


@dataclass
class Runs:
    """Every result of one workload in one placement: rounds of {side: result}."""

    rounds: list[dict[Side, Result]] = field(default_factory=list)

    def values(self, side: Side, metric: str) -> list[float]:
        return [r[side]["metrics"][metric] for r in self.rounds if "metrics" in r.get(side, {})]

    def problem(self, side: Side) -> str | None:
        for r in self.rounds:
            res = r.get(side, {})
            if "error" in res:
                return "error"
            if "na" in res:
                return "n/a"
        return None


#: placement -> workload key -> its runs.
Results = dict[str, dict[str, Runs]]


# ---------------------------------------------------------------- reporting
def fmt(x: float) -> str:
    if abs(x) >= 1000 or isinstance(x, int):
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_ratio(x: float) -> str:
    return f"{x:,.0f}x" if x >= 100 else f"{x:.2f}x"


def speedup(case: Case, stdlib: float, distproc: float) -> float:
    """distproc/stdlib as a speed-up: > 1 means distproc is better."""
    if case.higher_is_better:
        return distproc / stdlib if stdlib else float("inf")
    return stdlib / distproc if distproc else float("inf")


def summarise(case: Case, placement: str, runs: Runs, clients: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "case": case.name.format(clients=clients),
        "placement": placement,
        "unit": case.unit,
        "metric": case.metric,
        "target": target_text(case, placement),
    }
    sides = {"stdlib": STDLIB, "distproc": case.distproc}
    for label, side in sides.items():
        values = runs.values(side, case.metric)
        problem = runs.problem(side)
        if problem or not values:
            row[label] = None
            row[f"{label}_problem"] = problem or "no data"
            continue
        median = statistics.median(values)
        if all(isinstance(v, int) for v in values) and float(median).is_integer():
            median = int(median)  # a count stays a count
        row[label] = {
            "median": median,
            "min": min(values),
            "max": max(values),
            "runs": values,
        }
    std, dp = row["stdlib"], row["distproc"]
    row["ratio"] = None
    row["met"] = None
    if std is None or dp is None:
        problems = (row.get("stdlib_problem"), row.get("distproc_problem"))
        row["met"] = "n/a" if "n/a" in problems else "error"
        return row
    if not case.no_ratio:
        row["ratio"] = speedup(case, std["median"], dp["median"])
        paired = [
            speedup(case, std_m[case.metric], dp_m[case.metric])
            for r in runs.rounds
            if (std_m := r.get(STDLIB, {}).get("metrics"))
            and (dp_m := r.get(case.distproc, {}).get("metrics"))
        ]
        row["paired_ratios"] = paired
    if case.target_placement and case.target_placement != placement:
        pass  # the target is for another placement
    elif case.target_ratio is not None:
        row["met"] = "yes" if row["ratio"] >= case.target_ratio else "**no**"
    elif case.target_max is not None:
        row["met"] = "yes" if dp["max"] <= case.target_max else "**no**"
    elif case.target_min is not None:
        row["met"] = "yes" if dp["median"] >= case.target_min else "**no**"
    return row


def target_text(case: Case, placement: str) -> str:
    if case.target_placement and case.target_placement != placement:
        return "-"
    if case.target_ratio is not None:
        return f"≥ {case.target_ratio:g}x"
    if case.target_max is not None:
        return f"≤ {case.target_max:g} {case.unit}"
    if case.target_min is not None:
        return f"≥ {case.target_min:g} {case.unit}"
    return "-"


def cell(side: dict[str, Any] | None, problem: str | None) -> str:
    if side is None:
        return problem or "-"
    return f"{fmt(side['median'])} ({fmt(side['min'])}-{fmt(side['max'])})"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| Workload | CPUs | Unit | stdlib median (min-max) | distproc median (min-max) "
        "| distproc/stdlib (paired min-max) | Target | Met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["ratio"] is None:
            ratio = "-" if row["stdlib"] and row["distproc"] else "n/a"
        else:
            paired = row.get("paired_ratios") or [row["ratio"]]
            ratio = (
                f"**{fmt_ratio(row['ratio'])}** ({fmt_ratio(min(paired))}-{fmt_ratio(max(paired))})"
            )
        lines.append(
            f"| {row['case']} | {row['placement']} | {row['unit']} "
            f"| {cell(row['stdlib'], row.get('stdlib_problem'))} "
            f"| {cell(row['distproc'], row.get('distproc_problem'))} "
            f"| {ratio} | {row['target']} | {row['met'] or '-'} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ machine
def run_text(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def source_state() -> dict[str, Any]:
    """distproc's commit, and a digest of its sources (uncommitted edits included)."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "src").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    dirty = run_text(["git", "--no-optional-locks", "status", "--porcelain", "--", "src"])
    return {
        "commit": run_text(["git", "log", "-1", "--format=%h %s"]) or "?",
        "src_uncommitted_changes": len(dirty.splitlines()) if dirty else 0,
        "src_digest": digest.hexdigest()[:16],
    }


def machine() -> dict[str, Any]:
    model = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    version = run_text([sys.executable, "-c", "import distproc; print(distproc.__version__)"])
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "kernel": f"{platform.system()} {platform.release()}",
        "loadavg": os.getloadavg(),
        "distproc": version or "?",
        **source_state(),
    }


def machine_text(m: dict[str, Any], where: list[Placement]) -> str:
    lines = [
        f"- Date: {m['date']}",
        f"- Machine: {m['nproc']} CPUs (nproc), {m['cpu_model']}, {m['kernel']}, "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg'])}",
        f"- Python {m['python']} ({m['python_executable']})",
        f"- distproc {m['distproc']} at {m['commit']}"
        + (
            f" (+ uncommitted changes in {m['src_uncommitted_changes']} file(s) under src/)"
            if m["src_uncommitted_changes"]
            else ""
        ),
    ]
    lines += [f"- CPU placement, {p.name}: {p.describe}" for p in where]
    return "\n".join(lines)


def observed_cpus(results: Results) -> dict[str, set[str]]:
    """For each placement, the CPU sets the measured processes and servers reported."""
    seen: dict[str, set[str]] = {}
    for placement, by_workload in results.items():
        cpus = seen.setdefault(placement, set())
        for runs in by_workload.values():
            for r in runs.rounds:
                for res in r.values():
                    if "cpus" in res:
                        cpus.add("client " + cpu_list(res["cpus"]))
                    if "server_cpus" in res.get("metrics", {}):
                        cpus.add("server " + res["metrics"]["server_cpus"])
                    if "worker_cpus" in res.get("metrics", {}):
                        cpus.add("workers " + res["metrics"]["worker_cpus"])
    return seen


def tasks_text(results: Results) -> str:
    """(h), (i): the chunks distproc's map made, and what sleep(1 ms) really took."""
    lines = []
    for placement, by_workload in results.items():
        for key, title in (("h", "(h) no-op tasks"), ("i", "(i) 1 ms tasks")):
            runs = by_workload.get(key)
            if runs is None:
                continue
            # Each chunk is one task of the service (chunksize=1: one per call).
            sizes = runs.values(DISTPROC, "mean_chunk")
            chunks = runs.values(DISTPROC, "chunks")
            if sizes and chunks:
                lines.append(
                    f"- {title}, {placement}, map: {fmt(statistics.median(chunks))} chunks "
                    f"per run (median), of {fmt(statistics.median(sizes))} calls on average "
                    f"(min-max over runs {fmt(min(sizes))}-{fmt(max(sizes))})"
                )
            if key != "i":
                continue
            sides = (STDLIB, DISTPROC, CHUNK1)
            slept = [us for side in sides for us in runs.values(side, "sleep_us")]
            if slept:
                took = statistics.median(slept)
                lines.append(
                    f"- {title}, {placement}: time.sleep(0.001) took {fmt(took)} µs "
                    f"(median over every run, min-max {fmt(min(slept))}-{fmt(max(slept))}), "
                    f"so 2 processes doing nothing but sleep reach at most "
                    f"{fmt(2e6 / took)} tasks/s, {100 * 1000 / took:.1f}% of 2,000/s"
                )
    return "\n".join(lines)


# --------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="distproc vs multiprocessing.managers, side by side.",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs of each side per workload (default 5, 2 with --quick)",
    )
    parser.add_argument(
        "--only",
        default="all",
        help="workloads to run, e.g. a,c,f, or a set: managers (a-g), tasks (h, i) (default: all)",
    )
    pin = parser.add_mutually_exclusive_group()
    pin.add_argument(
        "--pin",
        dest="placement",
        action="store_const",
        const="pin",
        help="only with every process pinned to one CPU",
    )
    pin.add_argument(
        "--no-pin", dest="placement", action="store_const", const="no-pin", help="only unpinned"
    )
    pin.add_argument(
        "--both",
        dest="placement",
        action="store_const",
        const="both",
        help="unpinned and pinned (the default)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every result here")
    args = parser.parse_args(argv)
    args.placement = args.placement or "both"
    if args.runs is None:
        args.runs = 2 if args.quick else 5
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    keys = [k.strip() for k in args.only.replace(",", " ").split() if k.strip()]
    keys = [letter for k in keys for letter in WORKLOAD_SETS.get(k, k)]
    bad = [k for k in keys if k not in WORKLOAD_SETS["all"] or len(k) != 1]
    if bad or not keys:
        parser.error(
            f"--only takes workload letters a-i or {', '.join(WORKLOAD_SETS)}, not {args.only!r}"
        )
    args.only = sorted(set(keys))
    return args


def run_all(chosen: list[Workload], where: list[Placement], runs: int) -> Results:
    """Every measurement: per workload and placement, rounds of stdlib then distproc."""
    results: Results = {}
    for workload in chosen:
        for placement in where[:1] if workload.one_placement else where:
            found = results.setdefault(placement.name, {}).setdefault(workload.key, Runs())
            rounds = min(runs, workload.max_runs or runs)
            for i in range(rounds):
                round_: dict[Side, Result] = {}
                for side in workload.sides:
                    result = measure(placement, workload, side)
                    round_[side] = result
                    label = side[0] if side[1] == "plain" else f"{side[0]} {side[1]}"
                    print(
                        f"[{placement.name}] ({workload.workload}) {workload.title}, "
                        f"run {i + 1}/{rounds}, {label}: {headline(workload, result)} "
                        f"[{result.get('wall_s', 0):.1f} s]",
                        file=sys.stderr,
                        flush=True,
                    )
                found.rounds.append(round_)
    return results


def targets_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        if row["target"] == "-":
            continue
        ratio = "" if row["ratio"] is None else f" ({fmt_ratio(row['ratio'])})"
        verdict = {"yes": "met", "**no**": "NOT met"}.get(row["met"], row["met"] or "?")
        value = ""
        if row["distproc"] is not None:
            which = "max" if row["target"].startswith("≤") else "median"
            value = f", distproc {which} {fmt(row['distproc'][which])} {row['unit']}"
        lines.append(
            f"- {row['case']}, {row['placement']}: target {row['target']}: {verdict}{ratio}{value}"
        )
    return "\n".join(lines)


def write_json(
    path: Path,
    args: argparse.Namespace,
    info: dict[str, Any],
    where: list[Placement],
    results: Results,
    rows: list[dict[str, Any]],
    elapsed: float,
) -> None:
    raw = {
        placement: {
            key: [{f"{s[0]}-{s[1]}": res for s, res in r.items()} for r in runs.rounds]
            for key, runs in by_workload.items()
        }
        for placement, by_workload in results.items()
    }
    document = {
        "machine": info,
        "placements": {p.name: p.describe for p in where},
        "runs": args.runs,
        "quick": args.quick,
        "wall_s": elapsed,
        "summary": rows,
        "raw": raw,
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [w for w in workloads(args.quick) if w.workload in args.only]
    where = placements(args.placement)
    info = machine()
    print("# distproc vs multiprocessing.managers\n")
    print(machine_text(info, where))
    runs = f"- Runs: {args.runs} of each side per workload and placement, alternating"
    capped = [w for w in chosen if 0 < w.max_runs < args.runs or w.one_placement]
    if capped:
        runs += (
            " (except "
            + ", ".join(
                f"{w.title}: {min(args.runs, w.max_runs or args.runs)}"
                + (f", {where[0].name} only" if w.one_placement and len(where) > 1 else "")
                for w in capped
            )
            + ")"
        )
    print(runs + (", --quick" if args.quick else "") + "\n", flush=True)

    started = time.monotonic()
    results = run_all(chosen, where, args.runs)
    elapsed = time.monotonic() - started
    after = source_state()
    info["loadavg_at_end"] = os.getloadavg()
    info["source_at_end"] = after
    changed = after["src_digest"] != info["src_digest"]

    clients = idle_clients(args.quick)
    rows = [
        summarise(case, placement.name, results[placement.name][case.workload], clients)
        for case in CASES
        for placement in where
        if case.workload in results.get(placement.name, {})
    ]
    print("## Results\n")
    print(markdown_table(rows))
    print()
    print(
        "Ratios are distproc/stdlib as a speed-up (for times and memory: stdlib/distproc), "
        "so > 1 means distproc is better; the bold figure is the ratio of the medians, "
        "the range in brackets that of the ratios of each stdlib run and the distproc run "
        "that followed it. Absolute limits (≤) are checked against distproc's worst run, "
        "absolute floors (≥ %) against its median. CPU time rows add up the user and "
        "system time of every process measured (client, server, workers) over the timed "
        "part, per operation; distproc's includes the polling that precedes a block "
        "(unpinned only: a process allowed one CPU never polls)."
    )
    for name, cpus in observed_cpus(results).items():
        print(f"CPUs reported by the measured processes, {name}: {', '.join(sorted(cpus))}.")
    notes = tasks_text(results)
    if notes:
        print("\nThe task system, (h) and (i):\n")
        print(notes + "\n")
    print(
        f"Wall time of the whole run: {elapsed:.0f} s; load average at the end "
        f"{', '.join(f'{x:.2f}' for x in info['loadavg_at_end'])}.\n"
    )
    if changed:
        print(
            f"**Warning: distproc's sources changed during the run** (at the end: "
            f"{after['commit']}, {after['src_uncommitted_changes']} uncommitted file(s)): "
            "these figures mix versions; run again.\n"
        )
    print("## Targets\n")
    print(targets_text(rows))
    if args.json is not None:
        write_json(args.json, args, info, where, results, rows, elapsed)
    if changed:
        print("distproc's sources changed during the run: run again.", file=sys.stderr)
    return 1 if changed or any(row["met"] == "error" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
