"""The SQLite backend: the memory backend's state, kept in one file that survives restarts.

The service's process holds the state as the memory backend does (the same
transitions, the same rules) and writes each change to the file: the
memory backend's ``_saw_*`` hooks collect what changed, and :meth:`commit`
writes it all in one ``BEGIN IMMEDIATE`` transaction.  The service commits
once for all the calls it has in hand and answers them after (group
commit), so a task it acknowledged is in the file, and one fsync is shared
by every call of the batch.  With ``sync="full"`` (the default) a commit is
on disk when it returns; ``sync="normal"`` leaves the last commits to the
operating system, which loses them on a power failure (not when only the
process dies).  If a commit fails (a full disk), the transaction is rolled
back and :meth:`reload` reads the state back from the file: the calls of the
batch fail, nothing stored before is lost.

One file, WAL mode, one writer: the service that opened it holds a lock on
it (``flock``) and records its pid, so a second service is refused with that
pid.  The file records its application id and schema version; a file that
is not a store, a store of another version, a damaged file and a read-only
one are refused with a message that says which, before anything is written.

On a restart, the workers the file lists are *absent*: each that comes back
within ``heartbeat_timeout`` keeps its leases; the leases of the others go
back to the queue with no strike.  A master that comes back within the
grace it asked for gets its tasks and its unconfirmed outcomes; one that
does not is dropped.  Masters and workers get new ids from counters kept in
the file, so an id never repeats.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import logging
import os
import sqlite3
import tempfile
import time
from typing import Any, ClassVar

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type stubs

from ...errors import StoreError
from ..records import DeadLetter, Outcome, TaskOptions
from .base import Capabilities
from .memory import DELAYED, LEASED, QUEUED, MasterState, MemoryBackend, TaskState, WorkerState

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SYNC_MODES", "SqliteBackend"]

log = logging.getLogger("distproc.tasks")

#: ``PRAGMA application_id`` of a distproc task store ("dpts").
APPLICATION_ID = 0x64707473
SCHEMA_VERSION = 1
SYNC_MODES = ("full", "normal")
_HEADER = b"SQLite format 3\x00"
_SQLITE_CANTOPEN = 14

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY, master INTEGER NOT NULL, fn TEXT NOT NULL, payload BLOB NOT NULL,
    options BLOB NOT NULL, state INTEGER NOT NULL, attempt INTEGER NOT NULL,
    worker TEXT NOT NULL, pos INTEGER NOT NULL, available_at REAL NOT NULL,
    retries INTEGER NOT NULL, strikes INTEGER NOT NULL, suspect INTEGER NOT NULL,
    history BLOB NOT NULL);
CREATE TABLE outcomes (
    master INTEGER NOT NULL, seq INTEGER NOT NULL, task INTEGER NOT NULL,
    status TEXT NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (master, seq)) WITHOUT ROWID;
CREATE TABLE masters (
    id INTEGER PRIMARY KEY, grace REAL NOT NULL, expires_at REAL,
    high_water INTEGER NOT NULL, next_seq INTEGER NOT NULL);
CREATE TABLE workers (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, slots INTEGER NOT NULL,
    done INTEGER NOT NULL, leaving INTEGER NOT NULL, quarantined BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE dead_letters (
    task INTEGER PRIMARY KEY, master INTEGER NOT NULL, fn TEXT NOT NULL,
    payload BLOB NOT NULL, options BLOB NOT NULL, reason TEXT NOT NULL,
    attempts BLOB NOT NULL, at REAL NOT NULL);
"""


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


def _cannot_open(exc: sqlite3.Error) -> bool:
    """SQLITE_CANTOPEN: the file, or one SQLite creates beside it, cannot be opened."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return code == _SQLITE_CANTOPEN or "unable to open" in str(exc)


def _can_create_in(directory: str) -> bool:
    """Whether a file can be created in ``directory`` (tried: access() cannot tell for root)."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".distproc-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def _to_wall(mono: float | None) -> float | None:
    return None if mono is None else time.time() + (mono - time.monotonic())


def _to_mono(wall: float | None) -> float | None:
    return None if wall is None else time.monotonic() + (wall - time.time())


class SqliteBackend(MemoryBackend):
    """Task state in a SQLite file: see the module docstring."""

    name: ClassVar[str] = "sqlite"
    capabilities: ClassVar[Capabilities] = Capabilities(
        durable=True, instant_requeue=True, via_service=True, multi_host=False,
        group_commit=True,
    )  # fmt: skip

    def __init__(
        self,
        *,
        path: str,
        sync: str = "full",
        max_attempts: int = 3,
        heartbeat_timeout: float = 10.0,
    ) -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {', '.join(SYNC_MODES)}, not {sync!r}")
        super().__init__(max_attempts=max_attempts, heartbeat_timeout=heartbeat_timeout)
        self.path = os.path.abspath(path)
        self.sync = sync
        self._lock_fd: int | None = None
        self._clear_changes()
        self._db = self._open()
        try:
            self._load(restarted=True)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ opening
    def _refuse(self, why: str) -> StoreError:
        return StoreError(f"the task store {self.path} {why}")

    def _open(self) -> sqlite3.Connection:
        path = self.path
        if os.path.isdir(path):
            raise self._refuse("is a directory: give the path of a file")
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            raise self._refuse(f"cannot be created: the directory {parent} does not exist")
        existed = os.path.exists(path) and os.path.getsize(path) > 0
        if existed:
            with open(path, "rb") as f:
                head = f.read(len(_HEADER))
            if head != _HEADER:
                raise self._refuse(
                    "is not a distproc task store (not a SQLite database); nothing was "
                    "changed: give another path, or move that file away"
                )
        try:
            self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self._refuse(self._unwritable(exc)) from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = self._owner_pid()
            self.close()
            raise self._refuse(
                f"is in use by another distproc service (pid {pid}): stop it first, or "
                "give another file"
            ) from None
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            self.close()
            raise self._refuse(f"cannot be opened: {exc}") from None
        try:
            self._check(db, existed)
        except BaseException:
            db.close()
            self.close()
            raise
        return db

    def _unwritable(self, exc: OSError) -> str:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return (f"cannot be written ({exc.strerror}): it, or its directory, is read-only; "
                    "the service needs to write there")  # fmt: skip
        return f"cannot be opened: {exc.strerror or exc}"

    def _owner_pid(self) -> str:
        """The pid that the service holding the file recorded, read without writing."""
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1.0)
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'owner_pid'").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return "unknown"
        return str(row[0]) if row else "unknown"

    def _check(self, db: sqlite3.Connection, existed: bool) -> None:
        """Refuse a file that is not a store of this version, or damaged; set it up."""
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if _cannot_open(exc) and not _can_create_in(os.path.dirname(self.path)):
                raise self._refuse(
                    f"cannot be opened: its directory {os.path.dirname(self.path)} is read-only, "
                    "and SQLite needs to create the file's -wal and -shm beside it; make the "
                    "directory writable"
                ) from None
            raise self._refuse(f"is damaged ({exc}); nothing was changed: restore it from a "
                               "copy, or give another path") from None  # fmt: skip
        new = app_id == 0 and tables == 0
        if not new and app_id != APPLICATION_ID:
            raise self._refuse(
                "is a SQLite database but not a distproc task store; nothing was changed: "
                "give another path"
            )
        if not new and version != SCHEMA_VERSION:
            raise self._refuse(
                f"has schema version {version}, and this distproc reads version "
                f"{SCHEMA_VERSION}; nothing was changed: use the distproc that wrote it"
            )
        if existed and not new:
            try:
                verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                verdict = str(exc)
            if verdict != "ok":
                raise self._refuse(f"is damaged ({verdict}); nothing was changed: restore it "
                                   "from a copy, or give another path")  # fmt: skip
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.sync.upper()}")
            if new:
                db.execute("BEGIN IMMEDIATE")
                db.executescript(_SCHEMA)  # executescript commits first: begin again after
                db.execute("BEGIN IMMEDIATE")
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("store_id", os.urandom(8).hex()), ("next_master", 1), ("next_worker", 1),
                    ("counts", _pack(self.counts)), ("created", time.time()),
                ])  # fmt: skip
                db.execute("COMMIT")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('owner_pid', ?)", (os.getpid(),))
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise self._refuse(self._explain(exc)) from None

    def _explain(self, exc: sqlite3.Error) -> str:
        text = str(exc)
        code = getattr(exc, "sqlite_errorcode", None)
        if code == getattr(sqlite3, "SQLITE_FULL", 13) or "full" in text:
            return ("is full (no room left on its disk): free some space; the calls in hand "
                    "failed, nothing stored before is lost")  # fmt: skip
        if "readonly" in text or "read-only" in text:
            return ("cannot be written: it, or its directory, is read-only; the service needs "
                    "to write there")  # fmt: skip
        return f"failed: {text}"

    # ------------------------------------------------------------- loading
    def _load(self, *, restarted: bool) -> None:
        db = self._db
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self.store_id = str(meta["store_id"])
        self.next_master = int(meta["next_master"])
        self.next_worker = int(meta["next_worker"])
        self.counts.update(_unpack(meta["counts"]))
        self._saved_counts = dict(self.counts)
        now = time.monotonic()
        for mid, grace, expires_at, high_water, next_seq in db.execute(
            "SELECT id, grace, expires_at, high_water, next_seq FROM masters"
        ):
            master = self.masters[mid] = MasterState(mid, grace)
            master.high_water, master.next_seq = high_water, next_seq
            master.expires_at = _to_mono(expires_at) if expires_at is not None else (
                now + grace if restarted else None
            )  # fmt: skip
        for wid, host, pid, slots, done, leaving, quarantined in db.execute(
            "SELECT id, host, pid, slots, done, leaving, quarantined FROM workers"
        ):
            worker = WorkerState.__new__(WorkerState)
            worker.id, worker.host, worker.pid, worker.slots = wid, host, pid, slots
            worker.label = f"{wid} ({host} pid {pid})"
            worker.leases, worker.done, worker.leaving = {}, done, bool(leaving)
            worker.last_seen = worker.since = now
            worker.give_back, worker.absent = 0, restarted
            worker.quarantined = dict(_unpack(quarantined))
            self.workers[wid] = worker
        orphans: list[TaskState] = []
        for row in db.execute("SELECT * FROM tasks ORDER BY pos"):
            task = self._task_from_row(row)
            self.tasks[task.id] = task
            owner = self.masters.get(task.master)
            if owner is not None:
                owner.tasks.add(task.id)
            if task.state == LEASED:
                holder = self.workers.get(task.worker)
                if holder is not None:
                    holder.leases[task.id] = now
                else:
                    orphans.append(task)
            elif task.state == DELAYED:
                heapq.heappush(self.delayed, (task.available_at, task.id))
            else:
                self.ready.append(task.id)
        positions = [t.pos for t in self.tasks.values()]
        self._head, self._tail = min(positions, default=0), max(positions, default=0)
        for mid, seq, tid, status, payload in db.execute(
            "SELECT master, seq, task, status, payload FROM outcomes ORDER BY master, seq"
        ):
            found = self.masters.get(mid)
            if found is not None:
                found.outbox.append(Outcome(tid, status, _unpack(payload), seq))
        for tid, mid, fn, payload, options, reason, attempts, at in db.execute(
            "SELECT * FROM dead_letters ORDER BY at"
        ):
            self.dead[tid] = DeadLetter(
                tid, mid, fn, payload, TaskOptions.from_wire(_unpack(options)), reason,
                tuple((str(a), str(b)) for a, b in _unpack(attempts)), at,
            )  # fmt: skip
        self._push_front(orphans)
        for mid, master in list(self.masters.items()):
            if master.grace <= 0:
                self.drop_master(mid)  # an in-process master: it died with the last service
        if restarted:
            log.info("task store %s: %d task(s), %d worker(s) and %d master(s) to come back",
                     self.path, len(self.tasks), len(self.workers), len(self.masters))  # fmt: skip
        self.notices.ready = bool(self.ready)

    def _task_from_row(self, row: tuple[Any, ...]) -> TaskState:
        (tid, mid, fn, payload, options, state, attempt, wid, pos, available_at, retries,
         strikes, suspect, history) = row  # fmt: skip
        task = TaskState.__new__(TaskState)
        task.id, task.master, task.fn, task.payload = tid, mid, fn, payload
        task.options = TaskOptions.from_wire(_unpack(options))
        task.state, task.attempt, task.worker, task.pos = state, attempt, wid, pos
        task.available_at = _to_mono(available_at) or 0.0
        task.retries, task.strikes, task.suspect = retries, strikes, bool(suspect)
        task.history = [(str(a), str(b)) for a, b in _unpack(history)]
        if task.state not in (QUEUED, LEASED, DELAYED):
            task.state = QUEUED
        return task

    # -------------------------------------------------------------- changes
    def _clear_changes(self) -> None:
        self._tasks_changed: dict[int, TaskState | None] = {}
        self._workers_changed: dict[str, WorkerState | None] = {}
        self._masters_changed: dict[int, MasterState | None] = {}
        self._outcomes_new: list[tuple[int, Outcome]] = []
        self._confirmed: dict[int, int] = {}
        self._dead_changed: dict[int, DeadLetter | None] = {}
        self._meta_changed = False

    def _saw_task(self, task: TaskState) -> None:
        self._tasks_changed[task.id] = task

    def _saw_task_end(self, tid: int) -> None:
        self._tasks_changed[tid] = None

    def _saw_worker(self, worker: WorkerState) -> None:
        self._workers_changed[worker.id] = worker
        self._meta_changed = True  # next_worker

    def _saw_worker_end(self, wid: str) -> None:
        self._workers_changed[wid] = None

    def _saw_master(self, master: MasterState) -> None:
        self._masters_changed[master.id] = master
        self._meta_changed = True  # next_master

    def _saw_master_end(self, mid: int) -> None:
        self._masters_changed[mid] = None

    def _saw_outcome(self, mid: int, outcome: Outcome) -> None:
        self._outcomes_new.append((mid, outcome))

    def _saw_confirmed(self, mid: int, upto: int) -> None:
        self._confirmed[mid] = upto

    def _saw_dead_letter(self, letter: DeadLetter) -> None:
        self._dead_changed[letter.task] = letter

    def _saw_dead_letter_end(self, tid: int) -> None:
        self._dead_changed[tid] = None

    def _pending_changes(self) -> bool:
        return bool(
            self._tasks_changed or self._workers_changed or self._masters_changed
            or self._outcomes_new or self._confirmed or self._dead_changed
            or self._meta_changed or self.counts != self._saved_counts
        )  # fmt: skip

    def commit(self) -> None:
        if not self._pending_changes():
            return
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            self._write(db)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise self._refuse(self._explain(exc)) from None
        finally:
            self._clear_changes()
        self._saved_counts = dict(self.counts)

    def _write(self, db: sqlite3.Connection) -> None:
        tasks = self._tasks_changed
        db.executemany("DELETE FROM tasks WHERE id = ?",
                       [(tid,) for tid, t in tasks.items() if t is None])  # fmt: skip
        db.executemany(
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(t.id, t.master, t.fn, t.payload, _pack(t.options.to_wire()), t.state, t.attempt,
              t.worker, t.pos, _to_wall(t.available_at) if t.state == DELAYED else 0.0,
              t.retries, t.strikes, int(t.suspect), _pack(t.history))
             for t in tasks.values() if t is not None],
        )  # fmt: skip
        db.executemany(
            "INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?, ?)",
            [(mid, o.seq, o.task, o.status, _pack(o.payload)) for mid, o in self._outcomes_new],
        )
        db.executemany("DELETE FROM outcomes WHERE master = ? AND seq <= ?",
                       list(self._confirmed.items()))  # fmt: skip
        masters = self._masters_changed
        gone = [(mid,) for mid, m in masters.items() if m is None]
        db.executemany("DELETE FROM masters WHERE id = ?", gone)
        db.executemany("DELETE FROM outcomes WHERE master = ?", gone)
        db.executemany(
            "INSERT OR REPLACE INTO masters VALUES (?, ?, ?, ?, ?)",
            [(m.id, m.grace, _to_wall(m.expires_at), m.high_water, m.next_seq)
             for m in masters.values() if m is not None],
        )  # fmt: skip
        workers = self._workers_changed
        db.executemany("DELETE FROM workers WHERE id = ?",
                       [(wid,) for wid, w in workers.items() if w is None])  # fmt: skip
        db.executemany(
            "INSERT OR REPLACE INTO workers VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(w.id, w.host, w.pid, w.slots, w.done, int(w.leaving), _pack(w.quarantined))
             for w in workers.values() if w is not None],
        )  # fmt: skip
        dead = self._dead_changed
        db.executemany("DELETE FROM dead_letters WHERE task = ?",
                       [(tid,) for tid, d in dead.items() if d is None])  # fmt: skip
        db.executemany(
            "INSERT OR REPLACE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(d.task, d.master, d.fn, d.payload, _pack(d.options.to_wire()), d.reason,
              _pack([list(a) for a in d.attempts]), d.at)
             for d in dead.values() if d is not None],
        )  # fmt: skip
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
            ("next_master", self.next_master), ("next_worker", self.next_worker),
            ("counts", _pack(self.counts)),
        ])  # fmt: skip

    def reload(self) -> None:
        self._reset()
        self._clear_changes()
        self.notices.ready = False
        self._load(restarted=False)

    # ---------------------------------------------------------- inspection
    def describe(self) -> dict[str, Any]:
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.path.getsize(self.path + suffix)
        return {**super().describe(), "path": self.path, "size": size,
                "schema": SCHEMA_VERSION, "sync": self.sync}  # fmt: skip

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            self._db = None  # type: ignore[assignment]  # closed: nothing may use it again
            with contextlib.suppress(sqlite3.Error):
                db.close()
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)
