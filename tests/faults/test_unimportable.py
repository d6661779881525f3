"""A worker that cannot import a task's function: quarantined there, run elsewhere.

What a user did: ``distproc map mymod:slow --address ...`` with a local
worker, and one ``distproc worker`` started in a folder where ``mymod`` does
not import.  Every process here is real; the test waits on what they say.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from distproc.cli.status import fetch_status

from ._procs import Proc, clean_environ, free_port, wait_for

pytestmark = pytest.mark.timeout(120)

KEY = "unimportable-key"
SLOW = """\
import time

def slow(x):
    time.sleep(0.005)
    return x * x
"""


def status(port: int) -> dict[str, Any]:
    report = fetch_status(("127.0.0.1", port), KEY.encode())
    [tasks] = [s for s in report["services"] if s.get("kind") == "tasks"]
    result: dict[str, Any] = tasks
    return result


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """One folder where mymod imports, one without it, one where importing it fails."""
    good, missing, broken = tmp_path / "good", tmp_path / "missing", tmp_path / "broken"
    for folder in (good, missing, broken):
        folder.mkdir()
    (good / "mymod.py").write_text(SLOW)
    (broken / "mymod.py").write_text('raise RuntimeError("no GPU on this host")\n')
    return good, missing, broken


def start_map(procs: Callable[..., Proc], cwd: Path, port: int, workers: int) -> Proc:
    return procs(
        "map", "mymod:slow", "-w", str(workers), "--address", f"127.0.0.1:{port}",
        "--no-progress", cwd=cwd, env=clean_environ(DISTPROC_AUTHKEY=KEY),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip


def start_worker(procs: Callable[..., Proc], cwd: Path, port: int) -> Proc:
    return procs(
        "worker", f"127.0.0.1:{port}", "-c", "1", cwd=cwd,
        env=clean_environ(DISTPROC_AUTHKEY=KEY),
    )  # fmt: skip


def start_run(
    procs: Callable[..., Proc], cwd: Path, workers: int, elsewhere: list[Path]
) -> tuple[Proc, int, list[Proc]]:
    """``distproc map`` in ``cwd`` with ``workers`` local workers, and one remote worker
    in each folder of ``elsewhere``; returns once they have all joined."""
    port = free_port()
    master = start_map(procs, cwd, port, workers=workers)
    master.wait_line("remote workers can join")
    remote = [start_worker(procs, folder, port) for folder in elsewhere]
    joined = workers + len(remote)
    wait_for(lambda: len(status(port)["workers"]) == joined, what="every worker to join")
    return master, port, remote


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_worker_that_cannot_import_the_module_leaves_its_tasks_to_the_others(
    tmp_path: Path, procs: Callable[..., Proc]
) -> None:
    good, missing, _ = folders(tmp_path)
    master, port, [bad] = start_run(procs, good, 1, [missing])
    assert master.popen.stdin is not None and master.popen.stdout is not None
    master.popen.stdin.write("".join(f"{x}\n" for x in range(1, 401)))
    master.popen.stdin.flush()
    out = [json.loads(master.popen.stdout.readline()) for _ in range(400)]
    assert out == [x * x for x in range(1, 401)]

    # The run is still open (stdin is): the service shows who quarantined what.
    workers = status(port)["workers"]
    quarantined = {w["pid"]: w["quarantined"] for w in workers}
    [bad_pid] = [pid for pid, found in quarantined.items() if found]
    assert parent_of(bad_pid) == bad.popen.pid  # the child of the bad `distproc worker`
    [entry] = quarantined[bad_pid]
    assert entry["function"] == "mymod:slow"
    assert "ModuleNotFoundError: No module named 'mymod'" in entry["error"]
    env = clean_environ(DISTPROC_AUTHKEY=KEY)
    shown = subprocess.run(
        [sys.executable, "-m", "distproc", "status", f"127.0.0.1:{port}"],
        capture_output=True, text=True, env=env, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "Quarantined" in shown and "mymod:slow" in shown and "ModuleNotFoundError" in shown
    shown_json = subprocess.run(
        [sys.executable, "-m", "distproc", "status", f"127.0.0.1:{port}", "--json"],
        capture_output=True, text=True, env=env, timeout=30, check=True,
    ).stdout  # fmt: skip
    [service] = json.loads(shown_json)["services"]
    assert [w["quarantined"] for w in service["workers"] if w["pid"] == bad_pid] == [[entry]]

    master.popen.stdin.close()
    assert master.finish() == 0, master.text
    # The bad worker said so loudly, once, naming the function and the error.
    said = [line for line in bad.lines if "mymod:slow" in line]
    assert len(said) == 1, bad.text
    assert " WARNING " in said[0] and "No module named 'mymod'" in said[0]


def test_when_no_worker_can_import_it_each_call_gets_an_error_naming_every_worker(
    tmp_path: Path, procs: Callable[..., Proc]
) -> None:
    good, missing, broken = folders(tmp_path)
    master, port, [one, two] = start_run(procs, good, 0, [missing, broken])
    pids = [w["pid"] for w in status(port)["workers"]]
    assert master.popen.stdin is not None and master.popen.stdout is not None
    master.popen.stdin.write("1\n2\n3\n")
    master.popen.stdin.close()
    out = [json.loads(line) for line in master.popen.stdout]
    assert master.finish() == 1
    assert len(out) == 3
    for line, record in enumerate(out, 1):
        error = record["error"]
        assert error["type"] == "distproc.errors.TaskImportError"
        assert error["line"] == line
        assert error["traceback"] is None
        message = error["message"]
        assert message.startswith("no connected worker can import mymod:slow: ")
        assert all(f"pid {pid})" in message for pid in pids)
        assert "ModuleNotFoundError: No module named 'mymod'" in message
        assert "RuntimeError: no GPU on this host" in message
    assert master.lines[-1].startswith("distproc: error: 3 of 3 calls failed")
    assert one.popen.poll() is None and two.popen.poll() is None  # they wait for other work
