"""The machinery of the conformance tests: interpreters, their venvs, suite runs.

* :func:`conformance_pythons`: CPython 3.10-3.13 under ``$(pyenv root)/versions``
  (distproc needs 3.10+), each with its own ``Lib/test``.
* :func:`ensure_venv`: a venv of one of them with distproc installed
  (editable, so it runs this checkout's code), made once and reused while the
  project's dependencies and the interpreter are the same.
* :func:`run_suite`: runs ``cpython/runner.py`` in that venv, in a process
  group of its own that is killed when it is done, and reads its results.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..harness import PeerPython, find_peer_pythons

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "cpython" / "runner.py"
REPO = HERE.parents[2]
#: Where the venvs live (ignored by git), one per interpreter.
VENVS = REPO / ".conformance" / "venvs"
#: Seconds a whole suite may take before the harness kills it.
SUITE_TIMEOUT = 1200.0
#: Seconds one conformance test may take: the suite runs it waits for, and a venv.
TEST_TIMEOUT = 2 * SUITE_TIMEOUT + 900
#: Outcomes that count as conforming (an expected failure is what CPython expects).
CONFORMING = frozenset({"pass", "xfail"})


def conformance_pythons() -> list[PeerPython]:
    """The installed CPythons 3.10-3.13 (one per minor version, the newest)."""
    newest: dict[tuple[int, int], PeerPython] = {}
    for peer in find_peer_pythons():
        if peer.version[:2] >= (3, 10):
            newest[peer.version[:2]] = peer
    return [
        PeerPython(p.path, p.version, "py{}.{}".format(*p.version[:2]))
        for _, p in sorted(newest.items())
    ]


# ----------------------------------------------------------------------- venvs
def _stamp(python: PeerPython) -> str:
    """What a venv depends on: the interpreter and the project's dependencies."""
    pyproject = (REPO / "pyproject.toml").read_text()
    found = re.search(r"^dependencies = \[.*?\]", pyproject, re.S | re.M)
    dependencies = found.group(0) if found else pyproject
    return hashlib.sha256(f"{python.path}\0{dependencies}".encode()).hexdigest()


def ensure_venv(python: PeerPython) -> tuple[Path, float]:
    """The venv's interpreter for ``python``, and the seconds spent making it (0 if reused)."""
    venv = VENVS / python.id
    exe = venv / "bin" / "python"
    stamp_file = venv / "distproc-stamp"
    stamp = _stamp(python)
    if exe.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return exe, 0.0
    started = time.monotonic()
    if venv.exists():
        shutil.rmtree(venv)
    VENVS.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(python.path), "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(exe), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", str(REPO)],
        check=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    stamp_file.write_text(stamp)
    return exe, time.monotonic() - started


# ----------------------------------------------------------------------- runs
@dataclass(frozen=True)
class Outcome:
    outcome: str  # pass, fail, error, skip, xfail, xpass, hung
    detail: str
    seconds: float

    @property
    def conforms(self) -> bool:
        return self.outcome in CONFORMING

    def summary(self) -> str:
        """The outcome and the last line of its traceback that names an exception."""
        lines = [line for line in self.detail.strip().splitlines() if line.strip()]
        named = [line for line in lines if "Error" in line or "Exception" in line]
        last = (named or lines or [""])[-1].strip()
        return f"{self.outcome}: {last}" if last else self.outcome


@dataclass
class SuiteRun:
    """The outcome of every test of one run, and how the run went."""

    label: str
    outcomes: dict[str, Outcome]
    seconds: float
    returncode: int
    log: Path

    def passing(self) -> set[str]:
        return {test for test, o in self.outcomes.items() if o.conforms}


def _read_results(path: Path, log: Path) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    running: str | None = None
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "start":
                running = record["test"]
                continue
            new = Outcome(record["outcome"], record["detail"], record["seconds"])
            old = outcomes.get(record["test"])
            # A test with subtests reports each failing one: the first failure stays.
            if old is None or (old.conforms and not new.conforms):
                outcomes[record["test"]] = new
            running = None
    if running is not None:
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        outcomes[running] = Outcome("hung", "the run ended in this test:\n" + tail, 0.0)
    return outcomes


def run_suite(exe: Path, suite: str, side: str, start_method: str, out_dir: Path) -> SuiteRun:
    """Run one suite on one side, to the end or :data:`SUITE_TIMEOUT`."""
    label = f"{suite}-{side}-{start_method}"
    results = out_dir / f"{label}.jsonl"
    log = out_dir / f"{label}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CONFORMANCE_"))}
    env["PYTHONUNBUFFERED"] = "1"
    started = time.monotonic()
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [str(exe), str(RUNNER), suite, side, start_method, str(results)],
            cwd=str(RUNNER.parent),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=SUITE_TIMEOUT)
        except subprocess.TimeoutExpired:
            returncode = -signal.SIGKILL
        finally:
            # The runner's group: the runner, and whatever a test left behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return SuiteRun(label, _read_results(results, log), time.monotonic() - started, returncode, log)

