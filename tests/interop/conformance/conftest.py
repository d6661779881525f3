"""Fixtures of the conformance tests: venvs and suite runs, made once per session, in parallel.

Each conformance test module says which suite runs a test needs, from its
parameters (``suite_runs(params)``: a list of ``(python, suite, side,
start_method)``).  When the first of those tests asks for a run, every run
that the session's collected tests need is started, :data:`JOBS` at a time
(the longest first), each interpreter's venv made once before its first
run; ``suite_run(python, suite, side, start_method)`` then waits for the one
it asks for.  A run spends most of its time waiting for its child processes
(CPython's tests start processes and wait on timeouts), so a few at once
shorten the whole on two CPUs; each run still compares its two sides under
the same load.  ``CONFORMANCE_JOBS`` in the environment sets :data:`JOBS`.

The wall time of each venv made, of each run and of the whole is printed at
the end of the session (in the terminal summary) and written to
``.conformance/timings.json``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ..harness import PeerPython
from .harness import VENVS, SuiteRun, ensure_venv, run_suite

SuiteRunner = Callable[[PeerPython, str, str, str], SuiteRun]
#: (interpreter, suite, side, start method): one run of a suite.
RunKey = tuple[PeerPython, str, str, str]

#: Suite runs at once.
JOBS = int(os.environ.get("CONFORMANCE_JOBS", "3"))

_timings: list[dict[str, Any]] = []
_timings_lock = threading.Lock()


def _record(entry: dict[str, Any]) -> None:
    with _timings_lock:
        _timings.append(entry)


def _longest_first(key: RunKey) -> tuple[int, int, int]:
    """Runs measured to take longest go first: the executor suite on distproc,
    then spawn, then distproc's side."""
    _, suite, side, method = key
    executor_on_distproc = suite == "futures" and side == "distproc"
    return (-executor_on_distproc, -(method == "spawn"), -(side == "distproc"))


class SuiteRuns:
    """The session's suite runs, started together, :data:`JOBS` at a time."""

    def __init__(self, out: Path, planned: list[RunKey]) -> None:
        self._out = out
        self._planned = sorted(dict.fromkeys(planned), key=_longest_first)
        self._pool = ThreadPoolExecutor(JOBS, thread_name_prefix="conformance")
        self._runs: dict[tuple[str, str, str, str], Future[SuiteRun]] = {}
        self._venvs: dict[str, Path] = {}
        self._venv_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._started: float | None = None
        self._finished = 0.0

    def get(self, python: PeerPython, suite: str, side: str, start_method: str) -> SuiteRun:
        with self._lock:
            if self._started is None:
                self._started = time.monotonic()
                for key in self._planned:
                    self._submit(key)
            future = self._submit((python, suite, side, start_method))
        return future.result()

    def _submit(self, key: RunKey) -> Future[SuiteRun]:
        python, suite, side, method = key
        ident = (python.id, suite, side, method)
        if ident not in self._runs:
            self._runs[ident] = self._pool.submit(self._run, key)
        return self._runs[ident]

    def _venv(self, python: PeerPython) -> Path:
        with self._lock:
            lock = self._venv_locks.setdefault(python.id, threading.Lock())
        with lock:
            if python.id not in self._venvs:
                exe, seconds = ensure_venv(python)
                self._venvs[python.id] = exe
                _record({"what": f"venv {python.id}", "seconds": seconds})
            return self._venvs[python.id]

    def _run(self, key: RunKey) -> SuiteRun:
        python, suite, side, method = key
        exe = self._venv(python)
        folder = self._out / python.id
        folder.mkdir(exist_ok=True)
        run = run_suite(exe, suite, side, method, folder)
        counts: dict[str, int] = {}
        for outcome in run.outcomes.values():
            counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
        _record({"what": f"{python.id} {run.label}", "seconds": run.seconds, "outcomes": counts})
        with self._lock:
            self._finished = time.monotonic()
        return run

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._started is not None:
            _record(
                {
                    "what": f"all {len(self._runs)} runs, {JOBS} at a time",
                    "seconds": self._finished - self._started,
                }
            )


def _planned(items: list[pytest.Item]) -> list[RunKey]:
    """The runs that the collected tests need, in their order."""
    planned: list[RunKey] = []
    for item in items:
        needs = getattr(getattr(item, "module", None), "suite_runs", None)
        if needs is not None:
            callspec = getattr(item, "callspec", None)
            planned += needs(callspec.params if callspec is not None else {})
    return planned


@pytest.fixture(scope="session")
def suite_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SuiteRunner]:
    runs = SuiteRuns(tmp_path_factory.mktemp("conformance"), _planned(request.session.items))
    try:
        yield runs.get
    finally:
        runs.close()
        if _timings:
            VENVS.parent.mkdir(parents=True, exist_ok=True)
            (VENVS.parent / "timings.json").write_text(json.dumps(_timings, indent=1) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _timings:
        return
    terminalreporter.section("conformance: wall time of each part")
    for entry in _timings:
        made = " (reused)" if entry["what"].startswith("venv") and not entry["seconds"] else ""
        counts = entry.get("outcomes")
        text = " ".join(f"{k}={v}" for k, v in sorted(counts.items())) if counts else ""
        terminalreporter.write_line(f"{entry['what']:<40} {entry['seconds']:7.1f} s{made}  {text}")
