"""Run the seed example: manager.py, then worker.py, and show both outputs.

    python examples/seed/run.py        (from any directory)

Every output line is prefixed with the program that wrote it.  The worker is
started once the manager prints its first ``Put:`` line: by then the manager's
server listens on port 5000 (the seed's worker connects once, without retrying).
Exits with 0 when both programs exit with 0, else with 1.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "src"  # a source checkout's distproc, if there is one

_print_lock = threading.Lock()


def start(name: str) -> subprocess.Popen[str]:
    """Start ``<name>.py`` with this interpreter, unbuffered, stderr into stdout."""
    env = dict(os.environ)
    if (SRC / "distproc").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-u", str(HERE / f"{name}.py")],
        cwd=HERE,
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


def main() -> int:
    events: queue.Queue[str] = queue.Queue()
    procs: dict[str, subprocess.Popen[str]] = {}
    pumps: list[threading.Thread] = []
    try:
        procs["manager"] = start("manager")
        pumps.append(threading.Thread(target=pump, args=("manager", procs["manager"], events)))
        pumps[-1].start()
        if events.get() == "serving":
            procs["worker"] = start("worker")
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
