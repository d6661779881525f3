"""A key holder names the Python installation's functions: a ``distproc worker`` refuses them.

What an attacker with the authkey did: submit tasks naming ``os:system``,
``builtins:eval``, ``subprocess:getoutput`` and ``pickle:loads`` (with a
pickle as its bytes argument) to a real ``distproc serve`` with a real
``distproc worker`` started without ``--allow-pickle``.  Each would create a
file; the tests check the file is absent, that the call failed with a message
naming the ``--allow`` that would run it, and that the worker still runs the
tasks' own code.  ``--allow`` does make it run (so the file check can fail).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import distproc
from distproc.cli.status import fetch_status
from distproc.errors import TaskImportError
from distproc.tasks.allowlist import AllowList, NotAllowedError

from ._procs import Proc, clean_environ, free_port, wait_for

pytestmark = pytest.mark.timeout(120)

KEY = "allowlist-key"
MYTASKS = """\
import os
from os import system

def square(x):
    return x * x
"""
# A module the worker could import (it is on PYTHONPATH) but that is not the
# tasks' own code: importing it creates a file, so "refused before import" shows.
EVIL = """\
from pathlib import Path
Path({marker!r}).write_text("imported")

def run():
    return "ran"
"""


class Named:
    """A callable that the Executor sends under a name of the test's choosing, as a
    hostile master would (an Executor names ``os.system`` ``posix:system``)."""

    def __init__(self, ex: distproc.Executor, ref: str) -> None:
        self.ref = ref
        ex._refs[self] = ref

    def __call__(self, *args: Any) -> Any:
        raise AssertionError("runs on a worker, never here")


class _Touch:
    """Unpickling it runs ``touch PATH`` (what a pickle sent to ``pickle:loads`` did)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def workers_joined(port: int) -> int:
    report = fetch_status(("127.0.0.1", port), KEY.encode())
    [tasks] = [s for s in report["services"] if s.get("kind") == "tasks"]
    return len(tasks["workers"])


def start(
    procs: Callable[..., Proc], tmp_path: Path, *extra: str
) -> tuple[int, Path, Path]:
    """``distproc serve`` and one ``distproc worker`` in ``tmp_path/job`` (which holds
    mytasks.py), with ``tmp_path/elsewhere`` (which holds evil.py) on its PYTHONPATH."""
    job, elsewhere, marks = tmp_path / "job", tmp_path / "elsewhere", tmp_path / "marks"
    for folder in (job, elsewhere, marks):
        folder.mkdir()
    (job / "mytasks.py").write_text(MYTASKS)
    (elsewhere / "evil.py").write_text(EVIL.format(marker=str(marks / "evil-imported")))
    port = free_port()
    procs(
        "serve", "--address", f"127.0.0.1:{port}", env=clean_environ(DISTPROC_AUTHKEY=KEY)
    ).wait_ready()
    env = clean_environ(DISTPROC_AUTHKEY=KEY, PYTHONPATH=str(elsewhere))
    procs("worker", f"127.0.0.1:{port}", "-c", "1", *extra, cwd=job, env=env)
    wait_for(lambda: workers_joined(port) == 1, what="the worker to join")
    return port, job, marks


def hostile(ex: distproc.Executor, marks: Path) -> dict[str, tuple[Any, Path]]:
    """Each attack: ref -> (its future, the file it would create)."""
    sent: dict[str, tuple[Any, Path]] = {}

    def send(ref: str, fn: Callable[..., Any] | None, *args: Any, mark: Path) -> None:
        sent[ref] = (ex.submit(fn or Named(ex, ref), *args), mark)

    for ref in ("os:system", "mytasks:os.system", "mytasks:system"):
        mark = marks / ref.replace(":", "_")
        send(ref, None, f"touch {mark}", mark=mark)
    send("posix:system", os.system, f"touch {marks / 'posix'}", mark=marks / "posix")
    mark = marks / "eval"
    send("builtins:eval", eval, f"open({str(mark)!r}, 'w').close()", mark=mark)
    mark = marks / "getoutput"
    send("subprocess:getoutput", subprocess.getoutput, f"touch {mark}", mark=mark)
    for ref in ("pickle:loads", "_pickle:loads"):
        mark = marks / ref.replace(":", "_")
        send(ref, pickle.loads if ref == "_pickle:loads" else None,
             pickle.dumps(_Touch(mark)), mark=mark)  # fmt: skip
    send("evil:run", None, mark=marks / "evil-imported")
    return sent


def test_a_worker_refuses_the_installations_functions_and_runs_its_own(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    port, _, marks = start(procs, tmp_path)
    with distproc.Executor(connect=("127.0.0.1", port), authkey=KEY) as ex:
        sent = hostile(ex, marks)
        own = ex.submit(Named(ex, "mytasks:square"), 12)
        assert own.result(timeout=60) == 144  # the tasks' own code runs
        for ref, (future, mark) in sent.items():
            with pytest.raises(TaskImportError) as info:
                future.result(timeout=60)
            message = str(info.value)
            assert f"{ref} is not allowed on this worker" in message, message
            assert "start it with --allow " in message, message
            assert not mark.exists(), f"{ref} ran: {mark} exists"
        assert "--allow os:system" in str(sent["os:system"][0].exception())
        assert "--allow evil:run" in str(sent["evil:run"][0].exception())
        # Reached through the tasks' module, it is named for what it is.
        assert "(it is posix:system)" in str(sent["mytasks:system"][0].exception())
        assert "(it is os:system)" in str(sent["mytasks:os.system"][0].exception())
        assert ex.submit(Named(ex, "mytasks:square"), 3).result(timeout=60) == 9
    assert sorted(p.name for p in marks.iterdir()) == []


def test_allow_runs_what_it_names_and_only_that(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    port, _, marks = start(procs, tmp_path, "--allow", "os:system", "--allow", "evil")
    with distproc.Executor(connect=("127.0.0.1", port), authkey=KEY) as ex:
        assert ex.submit(Named(ex, "os:system"), f"touch {marks / 'allowed'}").result(60) == 0
        assert ex.submit(Named(ex, "evil:run")).result(timeout=60) == "ran"
        getoutput = ex.submit(subprocess.getoutput, f"touch {marks / 'getoutput'}")
        with pytest.raises(TaskImportError, match="--allow subprocess:getoutput"):
            getoutput.result(timeout=60)
    assert sorted(p.name for p in marks.iterdir()) == ["allowed", "evil-imported"]


def test_a_path_directory_is_the_tasks_own_code(procs: Callable[..., Proc], tmp_path: Path) -> None:
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "shapes.py").write_text("def area(w, h):\n    return w * h\n")
    port, _, _ = start(procs, tmp_path, "--path", str(libs))
    with distproc.Executor(connect=("127.0.0.1", port), authkey=KEY) as ex:
        assert ex.submit(Named(ex, "shapes:area"), 6, 7).result(timeout=60) == 42


def test_an_executors_own_workers_trust_their_master() -> None:
    """Code written for ProcessPoolExecutor: pow and str run on the Executor's workers."""
    with distproc.Executor(workers=1) as ex:
        assert ex.submit(pow, 2, 10).result(timeout=60) == 1024
        assert list(ex.map(str, [1, 2], timeout=60)) == ["1", "2"]


def test_distproc_map_with_its_own_workers_runs_a_builtin(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "distproc", "map", "builtins:abs", "-w", "1", "--no-progress"],
        input="-3\n4\n", capture_output=True, text=True, cwd=tmp_path, timeout=90,
        env=clean_environ(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "4"]


def test_the_check_imports_nothing(tmp_path: Path) -> None:
    """Refused by where the module lies, asked of the import system without importing."""
    script = (
        "import sys\n"
        "from distproc.tasks.allowlist import AllowList, NotAllowedError\n"
        f"allowed = AllowList([{str(tmp_path)!r}])\n"
        "for ref in ('xml.dom.minidom:parseString', 'http.server:test', 'click:echo'):\n"
        "    try:\n"
        "        allowed.check(ref)\n"
        "    except NotAllowedError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit(ref + ' allowed')\n"
        "print(sorted(m for m in ('xml.dom', 'http.server', 'click') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
        env=clean_environ(), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_bad_allow_entry_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="expected MODULE or MODULE:FUNCTION"):
        AllowList([], ["os:"])
    with pytest.raises(NotAllowedError, match=r"--allow distproc\.cli:main"):
        AllowList([Path(distproc.__file__).parents[2]]).check("distproc.cli:main")
