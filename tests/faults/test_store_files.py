"""Bad task-store files, for real, through ``distproc serve --store``: each is refused
with one line that says what is wrong and what to do, and nothing in it is changed.

A file that is not a store, a store of another schema version, a store with
damaged bytes, a read-only file and a read-only directory (a real ``chmod``,
or ``chattr +i`` as root, whom ``chmod`` does not bind), a full disk (a real
small ``tmpfs``, as root), and a second service on a file already served.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dp_taskfns as fns
import pytest

import distproc
from distproc.errors import StoreError
from distproc.tasks.backends import open_backend
from distproc.tasks.records import TaskSpec

from ._procs import AUTHKEY, Proc, clean_environ, free_port, wait_for
from ._stores import DurableService, integrity

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

_REFUSED = re.compile(r"^distproc: error: the task store (\S+) (.+)$")


def refusal(procs: Callable[..., Proc], store: Path, *, served: bool = False) -> str:
    """Run ``distproc serve --store STORE``; it must exit 1 with one line, and change nothing
    in STORE's directory (unless another service is ``served`` there): that line's reason."""
    before = snapshot(store.parent)
    proc = procs("serve", "--address", f"127.0.0.1:{free_port()}", "--store", str(store))
    assert proc.finish(30) == 1, proc.text
    lines = proc.text.splitlines()
    assert len(lines) == 1, proc.text
    match = _REFUSED.match(lines[0])
    assert match is not None, lines[0]
    assert match.group(1) == str(store)
    assert served or snapshot(store.parent) == before  # no byte changed, no -wal or -shm left
    return match.group(2)


def snapshot(directory: Path) -> dict[str, str]:
    """Every file in ``directory`` with a digest of its bytes (to see that nothing changed)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir()) if p.is_file()}  # fmt: skip


def made_store(path: Path, tasks: int) -> None:
    """A store at ``path`` holding ``tasks`` queued tasks of a master that may come back."""
    backend = open_backend(str(path))
    try:
        mid, base = backend.add_master(3600.0)
        backend.enqueue(mid, [TaskSpec(base + 1 + x, "dp_taskfns:echo", b"%05d" % x * 100)
                              for x in range(tasks)])  # fmt: skip
        backend.commit()
    finally:
        backend.close()


def test_a_file_that_is_not_a_store_is_refused_and_kept(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE mine (a)")
    db.commit()
    db.close()
    assert refusal(procs, text).startswith("is not a distproc task store (not a SQLite database)")
    assert refusal(procs, other).startswith("is a SQLite database but not a distproc task store")


def test_a_store_of_another_schema_version_is_refused_and_kept(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    store = tmp_path / "tasks.db"
    made_store(store, tasks=5)
    db = sqlite3.connect(store)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    reason = refusal(procs, store)
    assert reason.startswith("has schema version 99, and this distproc reads version 1"), reason
    assert "use the distproc that wrote it" in reason


def test_a_store_with_damaged_bytes_is_refused_and_kept(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    store = tmp_path / "tasks.db"
    made_store(store, tasks=200)
    db = sqlite3.connect(store)
    [(page_size,)] = db.execute("PRAGMA page_size").fetchall()
    [(root,)] = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'tasks'").fetchall()
    db.close()
    with open(store, "r+b") as f:  # the tasks table's root page: its header and cell pointers
        f.seek((root - 1) * page_size)
        f.write(b"\xde\xad\xbe\xef" * 16)
    reason = refusal(procs, store)
    assert reason.startswith("is damaged ("), reason
    assert "restore it from a copy" in reason


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` read-only for the service: ``chmod a-w``, and as root ``chattr +i`` (which
    binds root too); skipped where neither can hold."""
    mode = path.stat().st_mode
    path.chmod(mode & ~0o222)
    immutable = False
    try:
        if os.geteuid() == 0:
            if shutil.which("chattr") is None:
                pytest.skip("running as root, whom chmod does not bind, and no chattr")
            done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"running as root and chattr +i fails here: {done.stderr.strip()}")
            immutable = True
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(mode)


def test_a_read_only_file_is_refused_and_kept(procs: Callable[..., Proc], tmp_path: Path) -> None:
    store = tmp_path / "tasks.db"
    made_store(store, tasks=3)
    with read_only(store):
        reason = refusal(procs, store)
    assert reason.startswith("cannot be written ("), reason
    assert "read-only" in reason


def test_a_read_only_directory_is_refused_and_kept(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    folder = tmp_path / "stores"
    folder.mkdir()
    store = folder / "tasks.db"
    made_store(store, tasks=3)
    with read_only(folder):
        existing = refusal(procs, store)  # SQLite must create its -wal and -shm there
        new = refusal(procs, folder / "new.db")
    assert existing.startswith(f"cannot be opened: its directory {folder} is read-only"), existing
    assert new.startswith("cannot be written ("), new


def test_a_second_service_on_a_served_store_is_refused_with_the_first_ones_pid(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    store = tmp_path / "tasks.db"
    first = DurableService(procs, store)
    with distproc.Executor(connect=("127.0.0.1", first.port), authkey=AUTHKEY,
                           progress=False) as ex:  # fmt: skip
        future = ex.submit(fns.square, 7)
        reason = refusal(procs, store, served=True)
        assert reason == (f"is in use by another distproc service (pid {first.proc.popen.pid}): "
                          "stop it first, or give another file")  # fmt: skip
        procs("worker", first.address, "-c", "1").wait_ready()
        assert future.result(60) == 49  # the first one serves on, untouched
    first.stop()
    assert integrity(store) == "ok"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (``tmpfs``), unmounted after; skipped where mount is not allowed."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_full_disk_fails_the_calls_in_hand_keeps_reads_and_loses_nothing_stored(
    procs: Callable[..., Proc], small_disk: Path
) -> None:
    store = small_disk / "tasks.db"
    service = DurableService(procs, store)
    payload = os.urandom(48 * 1024)  # random: nothing compresses it
    with distproc.Executor(connect=("127.0.0.1", service.port), authkey=AUTHKEY,
                           reconnect_timeout=60, progress=False) as ex:  # fmt: skip
        futures: list[concurrent.futures.Future[Any]] = []

        def answered(future: concurrent.futures.Future[Any], pending: int) -> bool:
            """Stored (one more queued than the others pending) or failed."""
            return future.done() or service.status()["tasks"]["queued"] >= pending

        for x in range(60):  # 2.8 MiB for a 1 MiB disk, one task a call
            future = ex.submit(fns.echo, [x, payload])
            futures.append(future)
            wait_for(functools.partial(answered, future, sum(1 for f in futures if not f.done())),
                     what="the submit to be answered")  # fmt: skip
        failed = [f for f in futures if f.done()]
        assert failed, "the disk never filled"
        for future in failed:
            with pytest.raises(StoreError, match=r"is full \(no room left on its disk\)"):
                future.result(0)
        kept = [f for f in futures if not f.done()]
        assert kept, "nothing was stored"
        assert service.proc.count("is full") >= 1, service.proc.text
        # It serves reads: `distproc status`, a real process, shows the store and its counts.
        status = subprocess.run(
            ["distproc", "status", service.address, "--json"], capture_output=True, text=True,
            env=clean_environ(DISTPROC_AUTHKEY=AUTHKEY.decode()), timeout=60,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert f'"queued": {len(kept)}' in status.stdout
        # Room again (the filesystem grows): the stored tasks run, each result right.
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        procs("worker", service.address, "-c", "1").wait_ready()
        for future in kept:
            x, echoed = future.result(60)
            assert echoed == payload and futures[x] is future
    counts = service.status()["tasks"]
    assert counts["done"] == len(kept) and counts["queued"] == 0, counts
    service.stop()
    assert integrity(store) == "ok"
