"""``distproc worker`` pointed at the wrong place, or with the wrong key, and a service that goes.

A wrong authkey or a server that is not a task service will not fix itself:
on the first contact the worker says so in one line and exits with status 2.
After a first contact, the worker retries and says once that it does.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dp_taskfns as fns
import pytest

import distproc
from distproc.errors import NoTaskServiceError, StartError
from distproc.tasks.fleet import AUTHKEY_HEX_ENV, EXIT_REFUSED, local_workers

from ._procs import TASKFNS, Proc, clean_environ, free_port, wait_for

pytestmark = pytest.mark.timeout(120)

MANAGER_MODULE = """\
from distproc.managers import BaseManager

class QueueManager(BaseManager):
    pass
"""


@pytest.fixture
def stdlib_server() -> Iterator[tuple[str, int]]:
    """A stdlib multiprocessing.managers server (the interop tests' peer), in a subprocess."""
    peer = subprocess.Popen(
        [sys.executable, "-m", "peers.stdlib_server", "--authkey", b"key".hex()],
        cwd=Path(__file__).parents[1] / "interop", stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert peer.stdout is not None
        ready = peer.stdout.readline().split()
        assert ready[0] == "PORT", ready
        yield ("127.0.0.1", int(ready[1]))
    finally:
        peer.kill()
        peer.wait(30)
        if peer.stdout is not None:
            peer.stdout.close()


def served_manager(procs: Callable[..., Proc], tmp_path: Path, port: int) -> Proc:
    (tmp_path / "queues.py").write_text(MANAGER_MODULE)
    server = procs(
        "serve", "queues:QueueManager", "--address", f"127.0.0.1:{port}", cwd=tmp_path,
        env=clean_environ(DISTPROC_AUTHKEY="key"),
    )  # fmt: skip
    server.wait_ready()
    return server


def refused(procs: Callable[..., Proc], address: str, *extra: str, key: str = "key") -> str:
    """Run ``distproc worker ADDRESS``: it must exit 2 by itself with one line; that line."""
    worker = procs("worker", address, *extra, cwd=TASKFNS, env=clean_environ(DISTPROC_AUTHKEY=key))
    assert worker.finish(timeout=60) == 2, worker.text
    assert len(worker.lines) == 1, worker.text
    line = worker.lines[0].rstrip("\n")
    assert line.startswith("distproc: error: ")
    return line


@pytest.mark.parametrize("mode", [[], ["--threads"]])
def test_a_wrong_authkey_is_one_line_and_status_2(
    procs: Callable[..., Proc], mode: list[str]
) -> None:
    port = free_port()
    procs(
        "serve", "--address", f"127.0.0.1:{port}", env=clean_environ(DISTPROC_AUTHKEY="right")
    ).wait_ready()
    line = refused(procs, f"127.0.0.1:{port}", "-c", "2", *mode, key="wrong")
    assert f"the task service at 127.0.0.1:{port} refused the authkey" in line
    assert "DISTPROC_AUTHKEY" in line


@pytest.mark.parametrize("mode", [[], ["--threads"]])
def test_a_manager_is_not_a_task_service(
    procs: Callable[..., Proc], tmp_path: Path, mode: list[str]
) -> None:
    port = free_port()
    served_manager(procs, tmp_path, port)
    line = refused(procs, f"127.0.0.1:{port}", "-c", "2", *mode)
    assert f"127.0.0.1:{port} is a distproc manager with no task service" in line
    assert "distproc serve without MODULE:CLASS" in line


def test_a_stdlib_manager_is_not_a_task_service(
    procs: Callable[..., Proc], stdlib_server: tuple[str, int]
) -> None:
    host, port = stdlib_server
    line = refused(procs, f"{host}:{port}")
    assert f"{host}:{port} is not a distproc task service" in line


def test_a_port_that_never_speaks_is_one_line_and_status_2(
    procs: Callable[..., Proc], silent_listener: tuple[str, int]
) -> None:
    host, port = silent_listener
    worker = procs(
        "worker", f"{host}:{port}", cwd=TASKFNS,
        env=clean_environ(DISTPROC_AUTHKEY="key", DISTPROC_HANDSHAKE_TIMEOUT="1"),
    )  # fmt: skip
    assert worker.finish(timeout=60) == 2, worker.text
    assert len(worker.lines) == 1, worker.text
    line = worker.lines[0]
    assert "not a distproc or multiprocessing.managers server" in line
    assert line.count(f"{host}:{port}") == 1, line


def test_an_executor_that_connects_to_a_manager_says_so_plainly(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    port = free_port()
    served_manager(procs, tmp_path, port)
    with pytest.raises(NoTaskServiceError) as info:
        distproc.Executor(connect=("127.0.0.1", port), authkey=b"key")
    message = str(info.value)
    assert message.startswith(f"127.0.0.1:{port} is a distproc manager with no task service")
    assert "KeyError" not in message and "Traceback" not in message


def test_a_worker_waits_for_a_service_that_is_not_up_yet(procs: Callable[..., Proc]) -> None:
    port = free_port()
    env = clean_environ(DISTPROC_AUTHKEY="key")
    worker = procs("worker", f"127.0.0.1:{port}", "-c", "1", cwd=TASKFNS, env=env)
    worker.wait_line("cannot reach the task service .* waiting for it")
    procs("serve", "--address", f"127.0.0.1:{port}", env=env).wait_ready()
    worker.wait_line("worker with 1 process")
    assert worker.popen.poll() is None


def _listen_and_drop(port: int, count: int) -> None:
    """Accept ``count`` connections on ``port`` and close each at once (as a refusing peer)."""
    with socket.create_server(("127.0.0.1", port)) as listener:
        for _ in range(count):
            conn, _ = listener.accept()
            conn.close()


def test_a_worker_says_once_that_the_service_went_and_once_that_it_is_back(
    procs: Callable[..., Proc],
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = clean_environ(DISTPROC_AUTHKEY="key")
    service = procs("serve", "--address", address, env=env)
    service.wait_ready()
    worker = procs("worker", address, "-c", "1", cwd=TASKFNS, env=env)
    worker.wait_ready()
    with distproc.Executor(connect=("127.0.0.1", port), authkey=b"key", progress=False) as ex:
        wait_for(lambda: len(ex.status()["workers"]) == 1, what="the worker to join")
    service.stop()
    # Six attempts to reach the service, seen by a listener that drops each: one warning.
    _listen_and_drop(port, 6)
    assert worker.count("WARNING") == 1, worker.text
    assert worker.count(f"the task service at {address}") == 1, worker.text
    service = procs("serve", "--address", address, env=env)
    service.wait_ready()
    worker.wait_line(f"the task service at {address} is back")
    with distproc.Executor(connect=("127.0.0.1", port), authkey=b"key", progress=False) as ex:
        wait_for(lambda: len(ex.status()["workers"]) == 1, what="the worker to join again")
    assert worker.count("WARNING") == 2, worker.text


def test_a_key_changed_under_a_running_worker_is_retried_and_said_once(
    procs: Callable[..., Proc],
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    service = procs("serve", "--address", address, env=clean_environ(DISTPROC_AUTHKEY="old"))
    service.wait_ready()
    worker = procs("worker", address, "-c", "1", cwd=TASKFNS,
                   env=clean_environ(DISTPROC_AUTHKEY="old"))  # fmt: skip
    worker.wait_ready()
    with distproc.Executor(connect=("127.0.0.1", port), authkey=b"old", progress=False) as ex:
        wait_for(lambda: len(ex.status()["workers"]) == 1, what="the worker to join")
    service.stop()
    service = procs("serve", "--address", address, env=clean_environ(DISTPROC_AUTHKEY="new"))
    service.wait_ready()
    # The new service turns the worker away several times; the worker goes on, said once.
    wait_for(lambda: service.count("authentication failed") >= 3, what="three refused attempts")
    assert worker.popen.poll() is None
    assert worker.count("refused by the task service") == 1, worker.text


def test_local_workers_that_are_refused_fail_the_executor_not_loop() -> None:
    port = free_port()
    fleet = local_workers(("127.0.0.1", port), b"not the executor's key", 1)
    try:
        ex = distproc.Executor(address=("127.0.0.1", port), authkey=b"key", fleet=fleet,
                               progress=False)  # fmt: skip
        with ex:
            future = ex.submit(fns.square, 3)
            with pytest.raises(StartError) as info:
                future.result(60)
            message = str(info.value)
            assert message.startswith("the Executor's local workers cannot start: ")
            assert f"the task service at 127.0.0.1:{port} refused the authkey" in message
            with pytest.raises(StartError):
                ex.submit(fns.square, 4)
        assert fleet.refused and fleet.pids() == []
    finally:
        fleet.kill()


@pytest.mark.parametrize(
    ("environ", "said"),
    [({}, "no authkey: set DISTPROC_AUTHKEY"), ({AUTHKEY_HEX_ENV: "zz"}, "is not hex")],
)
def test_a_worker_child_that_cannot_start_says_so_and_is_not_restarted(
    procs: Callable[..., Proc], environ: dict[str, str], said: str
) -> None:
    worker = procs("worker", "127.0.0.1:9", "--child", cwd=TASKFNS, env=clean_environ(**environ))
    assert worker.finish(timeout=60) == EXIT_REFUSED, worker.text
    assert len(worker.lines) == 1, worker.text
    assert worker.lines[0].startswith("distproc: error: ")
    assert said in worker.lines[0]
