"""The task system's records, and the one place each turns into and out of wire form.

Masters, workers and the service exchange these as plain lists and dicts
(the native codec carries nothing else).  Each record's ``to_wire()`` makes
that form and its ``from_wire()`` reads it back, checking every field's type,
so a malformed message from a peer is a :class:`ValueError` that says what
was wrong, raised where it arrives, and no code further in reads a bare list.

A task, its lease, its report and its outcome are made once per task each,
on the path every task takes: they are plain slotted dataclasses (a frozen
one costs several times as much to make), and their ``from_wire()`` checks
the common, well-formed case in one expression before it looks closer at a
message that fails it.  Options are frozen (one default instance is shared
by every task) and make their wire form once.

==============  ===================================================  ==========
record          wire form                                            from
==============  ===================================================  ==========
TaskSpec        ``[id, function, payload, options]``                 master
Lease           ``[id, attempt, function, payload, options]``        service
Report          ``[id, attempt, status, payload]``                   worker
Outcome         ``[id, status, payload, seq]``                       service
TaskOptions     ``{name: value}`` of the options that are set, or    master
                ``None``
DeadLetter      ``{"task", "function", "reason", "attempts", "at"}``  service
==============  ===================================================  ==========

A task's *status* says how a run ended: :data:`OK`, :data:`ERROR`,
:data:`TIMEOUT`, :data:`RETRY` (an error the master asked to retry),
:data:`UNAVAILABLE` (the worker cannot import the function); a master also
receives :data:`LOST` (dead-lettered, or a ``map`` chunk whose worker was
lost) and :data:`UNAVAILABLE` (no connected worker can import it).  An
outcome's payload is the worker's bytes, except for :data:`LOST` and
:data:`UNAVAILABLE`, where it is a dict that says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "BATCH_BYTES",
    "CANCELLED",
    "DEFAULT_OPTIONS",
    "ERROR",
    "FINAL",
    "ID_BITS",
    "LOST",
    "OK",
    "RETRY",
    "TIMEOUT",
    "UNAVAILABLE",
    "DeadLetter",
    "Lease",
    "Outcome",
    "Report",
    "TaskOptions",
    "TaskSpec",
    "WorkerHello",
    "split_by_size",
]

#: How a run ended, as workers report it and masters receive it.
OK, ERROR, RETRY, TIMEOUT, LOST, CANCELLED = "ok", "error", "retry", "timeout", "lost", "cancelled"
#: From a worker: it cannot import the task's function (the payload is its error,
#: as text).  To a master: no worker can (the payload names each and its error).
UNAVAILABLE = "unavailable"
#: The statuses that finish a task when a worker reports them.
FINAL = frozenset((OK, ERROR, TIMEOUT))
_REPORTED = frozenset((OK, ERROR, TIMEOUT, RETRY, UNAVAILABLE))
_RECEIVED = frozenset((OK, ERROR, TIMEOUT, LOST, UNAVAILABLE))

#: Master ``m`` numbers its tasks from ``m << ID_BITS`` (so it needs no round trip
#: to name one); ids stay below 2**63, SQLite's largest integer.
ID_BITS = 40

#: A batch of tasks or results in one message holds about this many payload
#: bytes at most (a single larger one goes alone): far below any frame limit.
BATCH_BYTES = 8 * 1024 * 1024

_T = TypeVar("_T")


def split_by_size(items: list[_T], size: Callable[[_T], int]) -> list[list[_T]]:
    """``items`` in runs of at most BATCH_BYTES of ``size(item)`` (at least one each)."""
    out: list[list[_T]] = []
    run: list[_T] = []
    total = 0
    for item in items:
        n = size(item)
        if run and total + n > BATCH_BYTES:
            out.append(run)
            run, total = [], 0
        run.append(item)
        total += n
    if run:
        out.append(run)
    return out


# ------------------------------------------------------------------ checks
def _fields(value: Any, n: int, what: str) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ValueError(f"a {what} must be a list of {n} fields, not {value!r:.200}")
    return value


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise ValueError(f"{what} must be an int, not {type(value).__name__}")
    return value


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise ValueError(f"{what} must be a str, not {type(value).__name__}")
    return value


def _bytes(value: Any, what: str) -> bytes:
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if type(value) is not bytes:
        raise ValueError(f"{what} must be bytes, not {type(value).__name__}")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, not {value!r:.100}")
    return float(value)


def _pairs(value: Any, what: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{what} must be a list of [worker, how] pairs")
    out = []
    for pair in value:
        a, b = _fields(pair, 2, f"{what} entry")
        out.append((str(a), str(b)))
    return tuple(out)


# ----------------------------------------------------------------- options
_UNMADE: Any = object()


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How one task runs: set by its master, read by the service and the worker.

    ``timeout``: seconds a worker lets it run.  ``retry_on``: exception types
    (``module:qualname``) after which it runs again, up to ``retries`` times,
    ``backoff`` s the first time, doubled each time.  ``max_attempts``: the
    workers it may take down (0: the service's setting).  ``strikes`` and
    ``history``: losses it starts with (the calls of a lost ``map`` chunk).
    ``front``: queued before the others.  ``split``: a ``map`` chunk, which a
    lost worker sends back to its master rather than to the dead letters.
    ``chunk``: the payload is a list of calls (see ``run_chunk``).  ``block``:
    the payload is a block of JSON lines (see :func:`~.blocks.run_block`).
    """

    timeout: float | None = None
    retry_on: tuple[str, ...] = ()
    retries: int = 0
    backoff: float = 0.5
    max_attempts: int = 0
    strikes: int = 0
    history: tuple[tuple[str, str], ...] = ()
    front: bool = False
    split: bool = False
    chunk: bool = False
    block: bool = False
    #: The wire form, made on the first ``to_wire()`` (every lease of the task sends it).
    _wire: Any = field(default=_UNMADE, init=False, repr=False, compare=False)

    def to_wire(self) -> dict[str, Any] | None:
        """The options that differ from the defaults (``None`` when none does).

        The same object each time: whoever receives it must not change it.
        """
        wire = self._wire
        if wire is _UNMADE:
            wire = self._make_wire()
            object.__setattr__(self, "_wire", wire)
        return wire  # type: ignore[no-any-return]  # _make_wire's result, kept

    def _make_wire(self) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        for name, default in _DEFAULTS.items():
            value = getattr(self, name)
            if value != default:
                if name == "retry_on":
                    value = list(value)
                elif name == "history":
                    value = [list(pair) for pair in value]
                out[name] = value
        return out or None

    @classmethod
    def from_wire(cls, value: Any) -> TaskOptions:
        if value is None:
            return DEFAULT_OPTIONS
        if not isinstance(value, dict):
            raise ValueError(f"task options must be a dict or None, not {type(value).__name__}")
        unknown = set(value) - _DEFAULTS.keys()
        if unknown:
            raise ValueError(f"unknown task option(s): {', '.join(sorted(map(str, unknown)))}")
        got: dict[str, Any] = {}
        for name, raw in value.items():
            if name == "timeout":
                got[name] = None if raw is None else _number(raw, "the timeout")
            elif name == "backoff":
                got[name] = _number(raw, "the retry backoff")
            elif name in ("retries", "max_attempts", "strikes"):
                if _int(raw, name) < 0:
                    raise ValueError(f"{name} must be 0 or more")
                got[name] = raw
            elif name == "retry_on":
                if not isinstance(raw, (list, tuple)):
                    raise ValueError("retry_on must be a list of 'module:qualname' names")
                got[name] = tuple(_str(x, "a retry_on name") for x in raw)
            elif name == "history":
                got[name] = _pairs(raw, "the history")
            elif type(raw) is not bool:
                raise ValueError(f"{name} must be true or false, not {raw!r:.100}")
            else:
                got[name] = raw
        return cls(**got)


DEFAULT_OPTIONS = TaskOptions()
_DEFAULTS: dict[str, Any] = {
    name: getattr(DEFAULT_OPTIONS, name)
    for name, spec in TaskOptions.__dataclass_fields__.items()
    if spec.init
}


# ------------------------------------------------------------------- tasks
@dataclass(slots=True)
class TaskSpec:
    """A task as its master submits it: its id, its function, its arguments, its options."""

    id: int
    fn: str
    payload: bytes
    options: TaskOptions = DEFAULT_OPTIONS

    def to_wire(self) -> list[Any]:
        return [self.id, self.fn, self.payload, self.options.to_wire()]

    @classmethod
    def from_wire(cls, value: Any) -> TaskSpec:
        tid, fn, payload, options = _fields(value, 4, "task")
        if type(tid) is int and type(fn) is str and type(payload) is bytes and options is None:
            return cls(tid, fn, payload)
        return cls(
            _int(tid, "a task id"),
            _str(fn, "a task's function"),
            _bytes(payload, "a task's payload"),
            TaskOptions.from_wire(options),
        )


@dataclass(slots=True)
class Lease:
    """A task handed to a worker: its ``attempt`` number fences late results."""

    task: int
    attempt: int
    fn: str
    payload: bytes
    options: TaskOptions = DEFAULT_OPTIONS

    def to_wire(self) -> list[Any]:
        return [self.task, self.attempt, self.fn, self.payload, self.options.to_wire()]

    @classmethod
    def from_wire(cls, value: Any) -> Lease:
        tid, attempt, fn, payload, options = _fields(value, 5, "lease")
        if (type(tid) is int and type(attempt) is int and type(fn) is str
                and type(payload) is bytes and options is None):  # fmt: skip
            return cls(tid, attempt, fn, payload)
        return cls(
            _int(tid, "a task id"),
            _int(attempt, "an attempt"),
            _str(fn, "a task's function"),
            _bytes(payload, "a task's payload"),
            TaskOptions.from_wire(options),
        )


@dataclass(slots=True)
class Report:
    """A worker's word on one lease: how the run ended, and its result or error."""

    task: int
    attempt: int
    status: str
    payload: bytes

    def to_wire(self) -> list[Any]:
        return [self.task, self.attempt, self.status, self.payload]

    @classmethod
    def from_wire(cls, value: Any) -> Report:
        tid, attempt, status, payload = _fields(value, 4, "report")
        if type(status) is not str or status not in _REPORTED:
            raise ValueError(f"unknown status {status!r:.50} in a worker's report")
        if type(tid) is int and type(attempt) is int and type(payload) is bytes:
            return cls(tid, attempt, status, payload)
        return cls(
            _int(tid, "a task id"), _int(attempt, "an attempt"), status,
            _bytes(payload, "a result payload"),
        )  # fmt: skip


@dataclass(slots=True)
class Outcome:
    """A finished task, for its master.  ``seq`` numbers a master's outcomes, from 1.

    A master confirms what it has received by naming the last ``seq``; the
    service keeps an outcome until then, so none is lost on the way.
    """

    task: int
    status: str
    payload: Any
    seq: int = 0

    def to_wire(self) -> list[Any]:
        return [self.task, self.status, self.payload, self.seq]

    @classmethod
    def from_wire(cls, value: Any) -> Outcome:
        tid, status, payload, seq = _fields(value, 4, "outcome")
        if type(status) is not str or status not in _RECEIVED:
            raise ValueError(f"unknown status {status!r:.50} in an outcome")
        if status in (LOST, UNAVAILABLE):
            if not isinstance(payload, dict):
                raise ValueError(f"a {status} outcome must carry a dict")
        else:
            payload = _bytes(payload, "a result payload")
        return cls(_int(tid, "a task id"), status, payload, _int(seq, "an outcome's seq"))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A task that took down ``max_attempts`` workers, kept for inspection and requeueing."""

    task: int
    master: int
    fn: str
    payload: bytes
    options: TaskOptions
    reason: str
    attempts: tuple[tuple[str, str], ...]
    at: float  # wall-clock time (time.time())

    def to_wire(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "function": self.fn,
            "reason": self.reason,
            "attempts": [list(pair) for pair in self.attempts],
            "at": self.at,
        }


@dataclass(slots=True)
class WorkerHello:
    """What a worker says when it joins: where it runs, and who it was before, if anyone.

    ``resume`` is ``(store, worker)`` from an earlier join: a service of that
    store that still knows the worker gives it back its id and its leases,
    keeping only those in ``holding`` (the tasks the worker still has).
    """

    host: str = "?"
    pid: int = 0
    slots: int = 1
    quarantined: dict[str, str] = field(default_factory=dict)
    resume: tuple[str, str] | None = None
    holding: tuple[int, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "host": self.host, "pid": self.pid, "slots": self.slots,
            "quarantined": dict(self.quarantined),
        }  # fmt: skip
        if self.resume is not None:
            out["resume"] = {"store": self.resume[0], "worker": self.resume[1],
                             "holding": list(self.holding)}  # fmt: skip
        return out

    @classmethod
    def from_wire(cls, value: Any) -> WorkerHello:
        if not isinstance(value, dict):
            raise ValueError("a worker's hello must be a dict")
        said = value.get("quarantined") or {}
        if not isinstance(said, dict):
            raise ValueError("quarantined must be a dict of function -> error")
        hello = cls(
            host=str(value.get("host", "?")),
            pid=_int(value.get("pid", 0), "a pid"),
            slots=max(1, _int(value.get("slots", 1), "slots")),
            quarantined={str(k): str(v) for k, v in said.items()},
        )
        resume = value.get("resume")
        if resume is not None:
            if not isinstance(resume, dict):
                raise ValueError("resume must be a dict")
            hello.resume = (_str(resume.get("store"), "a store id"),
                            _str(resume.get("worker"), "a worker id"))  # fmt: skip
            holding = resume.get("holding") or []
            if not isinstance(holding, list):
                raise ValueError("holding must be a list of task ids")
            hello.holding = tuple(_int(t, "a task id") for t in holding)
        return hello
