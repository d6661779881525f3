"""Fixtures of the conformance tests: venvs, suite runs made once per session, timings.

``suite_run(python, suite, side, start_method)`` runs a suite the first time a
test asks for it and hands every later test the same :class:`SuiteRun`.  The
wall time of each venv made and of each run is printed at the end of the
session (``pytest -m conformance -s`` shows it; it is in the terminal summary)
and written to ``.conformance/timings.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..harness import PeerPython
from .harness import VENVS, SuiteRun, ensure_venv, run_suite

SuiteRunner = Callable[[PeerPython, str, str, str], SuiteRun]

_timings: list[dict[str, Any]] = []


@pytest.fixture(scope="session")
def suite_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuiteRunner]:
    runs: dict[tuple[str, str, str, str], SuiteRun] = {}
    venvs: dict[str, Path] = {}
    out = tmp_path_factory.mktemp("conformance")

    def get(python: PeerPython, suite: str, side: str, start_method: str) -> SuiteRun:
        key = (python.id, suite, side, start_method)
        if key not in runs:
            if python.id not in venvs:
                exe, seconds = ensure_venv(python)
                venvs[python.id] = exe
                _timings.append({"what": f"venv {python.id}", "seconds": seconds})
            folder = out / python.id
            folder.mkdir(exist_ok=True)
            run = run_suite(venvs[python.id], suite, side, start_method, folder)
            runs[key] = run
            counts: dict[str, int] = {}
            for outcome in run.outcomes.values():
                counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
            _timings.append(
                {"what": f"{python.id} {run.label}", "seconds": run.seconds, "outcomes": counts}
            )
        return runs[key]

    yield get
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
