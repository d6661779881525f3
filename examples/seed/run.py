"""Run the seed example: manager.py, then worker.py, and show both outputs.

    python examples/seed/run.py        (from any directory)
    python examples/seed/run.py --worker python2 [--python2 PATH]
    python examples/seed/run.py --manager python2 [--python2 PATH]

Every output line is prefixed with the program that wrote it.  The worker is
started once the manager prints its first ``Put:`` line: by then the manager's
server listens on port 5000 (the seed's worker connects once, without retrying).
Exits with 0 when both programs exit with 0, else with 1.

``--worker python2`` runs the seed's own Python 2 worker (``python2/worker.py``,
with the interpreter ``--python2``, default ``python2``) against the Python 3
manager; ``--manager python2`` runs the seed's Python 2 manager, which serves
with the stdlib 2.7 ``multiprocessing.managers``, for the Python 3 worker.
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "src"  # a source checkout's distproc, if there is one

_print_lock = threading.Lock()


def start(name: str, python2: str | None = None) -> subprocess.Popen[str]:
    """Start ``<name>.py`` unbuffered, stderr into stdout: with this interpreter,
    or the seed's Python 2 version of it with ``python2``."""
    env = dict(os.environ)
    folder = HERE
    argv = [sys.executable, "-u", str(HERE / f"{name}.py")]
    if python2 is not None:
        folder = HERE / "python2"
        argv = [python2, "-u", str(folder / f"{name}.py")]
        env.pop("PYTHONPATH", None)
    elif (SRC / "distproc").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        argv,
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def pump(name: str, proc: subprocess.Popen[str], events: queue.Queue[str] | None = None) -> None:
    """Copy ``proc``'s output to ours, prefixed; report the first ``Put:`` line or EOF."""
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            with _print_lock:
                print(f"[{name}] {line}", end="", flush=True)
            if events is not None and line.startswith("Put:"):
                events.put("serving")
                events = None
    if events is not None:
        events.put("eof")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the seed's manager and worker.")
    parser.add_argument("--manager", choices=["python3", "python2"], default="python3")
    parser.add_argument("--worker", choices=["python3", "python2"], default="python3")
    parser.add_argument("--python2", default="python2", help="the Python 2 interpreter")
    args = parser.parse_args(argv)
    python2 = {name: args.python2 if getattr(args, name) == "python2" else None
               for name in ("manager", "worker")}  # fmt: skip
    events: queue.Queue[str] = queue.Queue()
    procs: dict[str, subprocess.Popen[str]] = {}
    pumps: list[threading.Thread] = []
    try:
        procs["manager"] = start("manager", python2["manager"])
        pumps.append(threading.Thread(target=pump, args=("manager", procs["manager"], events)))
        pumps[-1].start()
        if events.get() == "serving":
            procs["worker"] = start("worker", python2["worker"])
            pumps.append(threading.Thread(target=pump, args=("worker", procs["worker"])))
            pumps[-1].start()
        codes = {name: proc.wait() for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for thread in pumps:
            thread.join()
    summary = ", ".join(f"{name} exited with {code}" for name, code in codes.items())
    if "worker" not in codes:
        summary += " before serving; the worker was not started"
    print(f"[run.py] {summary}", flush=True)
    return 0 if list(codes.values()) == [0, 0] else 1


if __name__ == "__main__":
    sys.exit(main())
