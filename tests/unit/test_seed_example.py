"""The seed's manager.py and worker.py (examples/seed/) run and agree, as in the seed.

The example fixes port 5000 and listens on all interfaces, so the pair runs in a
private network namespace when we can make one (root, ``unshare``, ``ip``), else
in the host's if port 5000 is free there, else the test is skipped.  The pair
is driven by examples/seed/run.py, which starts the worker once the manager has
printed its first ``Put:`` line (the seed's worker does not retry its connect).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from interop.harness import python27

from distproc.errors import StartError
from distproc.managers import BaseManager

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"
PORT = 5000  # fixed by the example


@functools.cache
def netns_prefix() -> tuple[str, ...] | None:
    """A command prefix that runs argv in a new network namespace with ``lo`` up, if allowed."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if os.geteuid() != 0 or unshare is None or ip is None:
        return None
    probe = subprocess.run(
        [unshare, "--net", ip, "link", "set", "lo", "up"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        return None
    return (unshare, "--net", "sh", "-c", f'{ip} link set lo up && exec "$0" "$@"')


def host_port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def isolated(argv: list[str]) -> list[str]:
    """``argv`` in a private network namespace, or as is when port 5000 is free here."""
    prefix = netns_prefix()
    if prefix is not None:
        return [*prefix, *argv]
    if host_port_free(PORT):
        return argv
    pytest.skip(f"no private network namespace (needs root, unshare, ip) and port {PORT} is busy")


def lines_of(output: str, name: str) -> list[str]:
    tag = f"[{name}] "
    return [line[len(tag) :] for line in output.splitlines() if line.startswith(tag)]


def run_seed(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        isolated([sys.executable, str(SEED / "run.py"), *options]),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


def assert_ten_squares(result: subprocess.CompletedProcess[str]) -> None:
    """Both programs printed what the seed shows, and exited with 0."""
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines_of(result.stdout, "manager") == [
        *(f"Put: {i} => worker" for i in range(10)),
        "Waiting for results ...",
        *(f"Get: {i * i} <= worker" for i in range(10)),
        "manager exit",
    ]
    worker = ["Connect to server  127.0.0.1"]
    for i in range(10):
        worker += [f"Get: {i} <= manager", f"Put: {i * i} => manager", "#" * 30]
    assert lines_of(result.stdout, "worker") == [*worker, "worker exit"]
    assert lines_of(result.stdout, "run.py") == ["manager exited with 0, worker exited with 0"]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_manager_and_worker_exchange_ten_squares(tmp_path: Path) -> None:
    assert_ten_squares(run_seed(tmp_path))


PYTHON27 = python27()
needs_python27 = pytest.mark.skipif(not PYTHON27.exists(), reason=f"{PYTHON27} is not installed")


@needs_python27
@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("python2_side", ["--worker", "--manager"])
def test_the_seeds_python2_program_with_a_distproc_one(tmp_path: Path, python2_side: str) -> None:
    """The seed's Python 2 worker (or manager), as it prints it, with distproc's other half:
    a Python 2.7 worker of a distproc master, a distproc worker of a Python 2.7 master."""
    assert_ten_squares(run_seed(tmp_path, python2_side, "python2", "--python2", str(PYTHON27)))


@pytest.mark.timeout(60)
def test_run_fails_when_the_manager_cannot_serve(tmp_path: Path) -> None:
    if netns_prefix() is None:
        pytest.skip("needs a private network namespace to hold port 5000 busy")
    holder = (
        "import socket, subprocess, sys\n"
        f"with socket.create_server(('', {PORT})):\n"
        "    sys.exit(subprocess.call([sys.executable, sys.argv[1]]))\n"
    )
    result = subprocess.run(
        isolated([sys.executable, "-c", holder, str(SEED / "run.py")]),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert lines_of(result.stdout, "worker") == []
    summary = lines_of(result.stdout, "run.py")
    assert len(summary) == 1
    assert summary[0].startswith("manager exited with ")
    assert summary[0].endswith(" before serving; the worker was not started")


_tasks: queue.Queue[int] = queue.Queue()


class LambdaManager(BaseManager):
    pass


LambdaManager.register("get_task_queue", callable=lambda: _tasks)


def test_spawn_start_with_a_lambda_says_what_to_change() -> None:
    manager = LambdaManager(
        address=("127.0.0.1", 0), authkey=b"unit-test-key", ctx=multiprocessing.get_context("spawn")
    )
    with pytest.raises(StartError) as info:
        manager.start()
    message = str(info.value)
    assert "lambda" in message or "get_task_queue" in message
    assert "fork" in message
