"""Two versions of distproc side by side in one run: is a change as fast as before?

    python benchmarks/compare.py --baseline ../old/.venv/bin/python --only managers --runs 7

``--baseline`` is the Python of another installation of distproc (a second
checkout of the commit to compare with, in a venv of its own, ``pip install
-e``); this process's Python is the other side.  Each measurement is the same
``_workload.py`` run as :mod:`run` runs it, with that workload's distproc
variants only (no stdlib side), and the two versions alternate within every
round (baseline then this tree, then the other way round in the next), so
that the noise of a shared machine falls on both.  It prints, for each metric
of :data:`run.CASES`, the median and min-max of each side and this tree's
speed-up over the baseline (> 1: faster now; for times, baseline/this), with
the min-max of the paired ratios of each round.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script: the repository root on sys.path, for the package of run.py.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import run

Sides = tuple[str, str]  # (label, python)


def version_of(python: str) -> str:
    """Where ``python`` imports distproc from, and that checkout's commit."""
    where = subprocess.run(
        [python, "-c", "import distproc, os; print(os.path.dirname(distproc.__file__))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    commit = subprocess.run(
        ["git", "-C", where, "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    return f"{where} ({commit or 'no git commit'})"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Two distproc versions, side by side.")
    parser.add_argument("--baseline", required=True, help="the Python of the other install")
    parser.add_argument("--only", default="managers", help="workloads, as run.py --only")
    parser.add_argument("--runs", type=int, default=5, help="rounds per workload and placement")
    parser.add_argument("--quick", action="store_true", help="run.py's short sizes")
    parser.add_argument(
        "--placement", choices=["both", "pin", "no-pin"], default="both", help="as run.py"
    )
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.only.replace(",", " ").split() if k.strip()]
    args.only = sorted({letter for k in keys for letter in run.WORKLOAD_SETS.get(k, k)})
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sides: list[Sides] = [("baseline", args.baseline), ("this tree", sys.executable)]
    chosen = [w for w in run.workloads(args.quick) if w.workload in args.only]
    where = run.placements(args.placement)
    print("# distproc against distproc: a baseline and this tree\n")
    for label, python in sides:
        print(f"- {label}: {python}, distproc from {version_of(python)}")
    print(run.machine_text(run.machine(), where))
    print(f"- Runs: {args.runs} rounds per workload and placement, the two sides alternating\n")
    started = time.monotonic()
    # results[placement][workload key][(variant, label)] = [metrics of each round]
    results: dict[str, dict[str, dict[tuple[str, str], list[dict[str, Any]]]]] = {}
    for workload in chosen:
        variants = [variant for impl, variant in workload.sides if impl == "distproc"]
        for placement in where[:1] if workload.one_placement else where:
            found = results.setdefault(placement.name, {}).setdefault(workload.key, {})
            rounds = min(args.runs, workload.max_runs or args.runs)
            for i in range(rounds):
                # Which side goes first changes every round: neither always runs on
                # the caches and the CPU state that the other left.
                order = sides if i % 2 == 0 else sides[::-1]
                for variant in variants:
                    for label, python in order:
                        result = run.measure(placement, workload, ("distproc", variant), python)
                        found.setdefault((variant, label), []).append(result)
                        print(
                            f"[{placement.name}] ({workload.workload}) {workload.title}, "
                            f"run {i + 1}/{rounds}, {variant}, {label}: "
                            f"{run.headline(workload, result)} [{result.get('wall_s', 0):.1f} s]",
                            file=sys.stderr,
                            flush=True,
                        )
    elapsed = time.monotonic() - started
    print(table(results, run.idle_clients(args.quick)))
    print(
        "\nSpeed-up: this tree against the baseline (times and memory: baseline/this), "
        "> 1 means faster or smaller now; the bold figure is the ratio of the medians, "
        "the range that of the ratios of the two runs of each round."
    )
    print(f"\nWall time of the whole run: {elapsed:.0f} s.")
    failed = any(
        "error" in r
        for by_workload in results.values()
        for by_side in by_workload.values()
        for runs in by_side.values()
        for r in runs
    )
    return 1 if failed else 0


def table(results: dict[str, Any], clients: int) -> str:
    lines = [
        "| Workload | CPUs | Unit | baseline median (min-max) | this tree median (min-max) "
        "| this/baseline (paired min-max) |",
        "|---|---|---|---|---|---|",
    ]
    for case in run.CASES:
        for placement, by_workload in results.items():
            by_side = by_workload.get(case.workload)
            if by_side is None:
                continue
            variant = case.distproc[1]
            old = values(by_side.get((variant, "baseline"), []), case.metric)
            new = values(by_side.get((variant, "this tree"), []), case.metric)
            if not old or not new:
                continue
            paired = [run.speedup(case, a, b) for a, b in zip(old, new, strict=False)]
            ratio = run.speedup(case, statistics.median(old), statistics.median(new))
            lines.append(
                f"| {case.name.format(clients=clients)} | {placement} | {case.unit} "
                f"| {cell(old)} | {cell(new)} | **{ratio:.3f}x** "
                f"({min(paired):.3f}x-{max(paired):.3f}x) |"
            )
    return "\n".join(lines)


def values(results: list[dict[str, Any]], metric: str) -> list[float]:
    """The metric of each run that has it (none if a run failed)."""
    found = [r.get("metrics", {}).get(metric) for r in results]
    return [] if None in found else [float(v) for v in found]


def cell(values: list[float]) -> str:
    return f"{run.fmt(statistics.median(values))} ({run.fmt(min(values))}-{run.fmt(max(values))})"


if __name__ == "__main__":
    sys.exit(main())
