"""Programs that never name distproc run on it, in every child, under each start method.

Each test runs a program of ``programs/`` in a fresh interpreter; the program
starts a child with each start method and prints, for itself and each child,
which ``multiprocessing.managers`` it sees (see ``report_managers.py``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PROGRAMS = Path(__file__).resolve().parent / "programs"
METHODS = [
    m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()
]

ON_DISTPROC = {
    "module": "distproc.managers",
    "imported_at_top": "distproc.managers",
    "Manager()": "distproc.managers.SyncManager",
    "value": "through the manager",
}
ON_STDLIB = {
    "module": "multiprocessing.managers",
    "imported_at_top": "multiprocessing.managers",
    "Manager()": "multiprocessing.managers.SyncManager",
    "value": "through the manager",
}


def run_program(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run(
        [sys.executable, *argv],
        cwd=PROGRAMS,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def report_of(*argv: str) -> dict[str, Any]:
    done = run_program(*argv)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def expect(on: dict[str, str]) -> dict[str, Any]:
    """The report of a program whose parent and children all run on ``on``."""
    return {"parent": on, **{method: dict(on, exitcode=0) for method in METHODS}}


def test_run_puts_the_program_and_every_child_on_distproc() -> None:
    assert report_of("-m", "distproc.run", "report_managers.py", *METHODS) == expect(ON_DISTPROC)


def test_run_dash_m_runs_a_module_on_distproc() -> None:
    assert report_of("-m", "distproc.run", "-m", "report_managers", *METHODS) == expect(
        ON_DISTPROC
    )


def test_install_as_the_first_line_is_the_same() -> None:
    assert report_of("install_at_top.py", *METHODS) == expect(ON_DISTPROC)


def test_the_program_alone_runs_on_the_stdlib() -> None:
    assert report_of("report_managers.py", *METHODS) == expect(ON_STDLIB)


def test_children_started_after_uninstall_run_on_the_stdlib() -> None:
    assert report_of("install_then_uninstall.py", *METHODS) == expect(ON_STDLIB)


def test_run_passes_the_script_its_arguments_and_folder(tmp_path: Path) -> None:
    script = tmp_path / "show.py"
    script.write_text(
        "import json, sys, multiprocessing.managers as m\n"
        "print(json.dumps([sys.argv, sys.path[0], m.__name__, __name__]))\n"
    )
    done = run_program("-m", "distproc.run", str(script), "a", "--b")
    assert done.returncode == 0, done.stderr
    argv, path0, module, name = json.loads(done.stdout)
    assert argv == [str(script), "a", "--b"]
    assert path0 == str(tmp_path)
    assert module == "distproc.managers"
    assert name == "__main__"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "usage: python -m distproc.run"),
        (("no-such-script.py",), "can't open file 'no-such-script.py'"),
        (("-m",), "-m needs a module name"),
    ],
)
def test_run_without_a_program_says_how_to_call_it(argv: tuple[str, ...], message: str) -> None:
    done = run_program("-m", "distproc.run", *argv)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
