"""The store as a user meets it on the command line: ``distproc status`` shows it, and
``distproc dead-letters`` lists a real poison task's dead letter, across a restart, and
puts it back on the queue.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import dp_taskfns as fns
import pytest

import distproc
from distproc.errors import WorkerLostError

from ._procs import AUTHKEY, TASKFNS, Proc, clean_environ, free_port, wait_for
from ._stores import DurableService

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``distproc ARGS`` as a user runs it (a wide terminal, so rich wraps no line)."""
    env = clean_environ(DISTPROC_AUTHKEY=AUTHKEY.decode(), COLUMNS="200")
    return subprocess.run(["distproc", *args], capture_output=True, text=True, env=env,
                          cwd=TASKFNS, timeout=60)  # fmt: skip


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_status_shows_the_store_its_size_schema_and_sync_mode(
    procs: Callable[..., Proc], tmp_path: Path, sync: str
) -> None:
    store = tmp_path / "tasks.db"
    service = DurableService(procs, store, "--sync", sync)
    shown = cli("status", service.address)
    assert shown.returncode == 0, shown.stderr
    size = store.stat().st_size + Path(f"{store}-wal").stat().st_size
    [line] = [x for x in shown.stdout.splitlines() if x.startswith("Store")]
    assert line == (f"Store  sqlite {store} · {size / 1048576:.1f} MiB · schema 1 · sync {sync}"
                    " · not guaranteed: one state for services on several hosts")  # fmt: skip
    report = json.loads(cli("status", service.address, "--json").stdout)
    [tasks] = [s for s in report["services"] if s["kind"] == "tasks"]
    assert {k: tasks["store"][k] for k in ("backend", "path", "schema", "sync")} == {
        "backend": "sqlite", "path": str(store), "schema": 1, "sync": sync,
    }  # fmt: skip
    assert tasks["store"]["capabilities"]["durable"] is True
    service.stop()


def test_status_of_a_memory_store_says_it_is_lost_when_the_service_stops(
    procs: Callable[..., Proc],
) -> None:
    address = f"127.0.0.1:{free_port()}"
    procs("serve", "--address", address).wait_ready()
    shown = cli("status", address)
    assert shown.returncode == 0, shown.stderr
    [line] = [x for x in shown.stdout.splitlines() if x.startswith("Store")]
    assert line == ("Store  memory · lost when the service stops · not guaranteed: one state "
                    "for services on several hosts")  # fmt: skip


def test_a_poison_task_is_dead_lettered_listed_across_a_restart_and_requeued(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    service = DurableService(procs, tmp_path / "tasks.db", "--max-attempts", "2")
    procs("worker", service.address, "-c", "1").wait_ready()  # it restarts its dead process
    marker = tmp_path / "cured"
    with distproc.Executor(connect=("127.0.0.1", service.port), authkey=AUTHKEY,
                           reconnect_timeout=60, progress=False) as ex:  # fmt: skip
        poison = ex.submit(fns.poison_until, str(marker))
        with pytest.raises(WorkerLostError):
            poison.result(60)  # it took down 2 workers
        assert ex.submit(fns.square, 3).result(60) == 9  # the service serves on
    service.restart()  # kill -9: the dead letter is in the file
    shown = cli("dead-letters", service.address)
    assert shown.returncode == 0, shown.stderr
    [line] = shown.stdout.splitlines()
    tid, function, _day, _time, reason = line.split(None, 4)
    assert function == "dp_taskfns:poison_until"
    assert reason.startswith("took down 2 worker(s): "), reason
    listed = json.loads(cli("dead-letters", service.address, "--json").stdout)
    assert [(str(d["task"]), d["function"]) for d in listed] == [(tid, function)]
    assert len(listed[0]["attempts"]) == 2, listed  # each worker it took down, and how
    marker.touch()  # the cause is fixed: put it back
    requeued = cli("dead-letters", service.address, "--requeue", tid)
    assert (requeued.returncode, requeued.stdout) == (0, f"queued again: {tid}\n"), requeued
    procs("worker", service.address, "-c", "1").wait_ready()
    ran = Path(f"{marker}.ran")
    wait_for(ran.exists, timeout=60, what="the requeued task to run")
    wait_for(lambda: service.status()["tasks"]["queued"] == 0, what="the queue to drain")
    assert ran.read_text() == "ran\n"  # once
    after = cli("dead-letters", service.address)
    assert after.stdout == f"no dead letters at {service.address}\n", after
    unknown = cli("dead-letters", service.address, "--requeue", tid)
    assert unknown.returncode == 1
    assert unknown.stderr == (f"distproc: error: no dead letter with id {tid} at "
                              f"{service.address}: see `distproc dead-letters "
                              f"{service.address}`\n")  # fmt: skip
    service.stop()
