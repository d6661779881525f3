"""The task-state seam: :class:`TaskBackend`, and what each backend declares it keeps.

A backend holds every task, lease, worker and master, and owns each state
transition as one atomic step: :meth:`~TaskBackend.enqueue`,
:meth:`~TaskBackend.lease`, :meth:`~TaskBackend.report`, giving tasks back,
losing a worker, :meth:`~TaskBackend.expire` (silent workers, due retries,
masters that did not come back, functions nobody can import), cancelling,
taking and confirming outcomes, stats.  The rules it applies are those of
:mod:`..policy`, written once for every backend.  Times are state, not
timers: a retry's ``available_at``, a worker's silence, a detached master's
expiry; :meth:`~TaskBackend.next_due` says when :meth:`~TaskBackend.expire`
has something to do, and whoever drives the backend calls it then.

Two kinds of driver exist:

* the task service (:mod:`..service`), for backends that live in its
  process (memory, SQLite): it turns calls from the network into these
  methods, holds long polls, and answers after :meth:`~TaskBackend.commit`;
  after each call it reads :attr:`~TaskBackend.notices` to learn whom to
  wake (workers waiting for tasks, masters waiting for outcomes, hoarders
  asked to give tasks back);
* the processes themselves, for a backend that masters and workers reach
  directly (Redis): each calls the methods through its channel
  (:mod:`..channels`), and waits with the backend's own blocking reads.

What a backend cannot guarantee is in its :class:`Capabilities`, which
``distproc status`` shows and the test suite checks.
"""

from __future__ import annotations

import abc
import bisect
import itertools
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from ..records import DeadLetter, Lease, Outcome, Report, TaskSpec, WorkerHello

__all__ = ["DURATION_BUCKETS", "Capabilities", "Durations", "Joined", "Notices", "TaskBackend"]


@dataclass(frozen=True)
class Capabilities:
    """What a backend keeps; each field is a guarantee, true or not for that backend.

    ``durable``: queued tasks, leases, outcomes not yet confirmed, dead letters,
    retry times, strikes and counters survive a restart of whatever holds the
    state.  ``instant_requeue``: a worker whose connection drops loses its
    leases at once (otherwise after ``heartbeat_timeout``).  ``via_service``:
    masters and workers reach it through a distproc task service (otherwise
    they talk to it directly).  ``multi_host``: the state can be shared by
    services on several hosts.  ``group_commit``: the calls in hand are made
    durable by one commit.
    """

    durable: bool
    instant_requeue: bool
    via_service: bool
    multi_host: bool
    group_commit: bool

    def to_wire(self) -> dict[str, bool]:
        return asdict(self)


@dataclass
class Notices:
    """What changed in the last calls that someone waiting must hear of.

    The driver drains it after each call (:meth:`TaskBackend.take_notices`).
    ``ready``: tasks were queued.  ``outcomes``: masters with new outcomes.
    ``give_back``: workers asked to return unstarted tasks.  ``leased``: the
    tasks leased, by master (for a master that marks its futures running).
    """

    ready: bool = False
    outcomes: set[int] = field(default_factory=set)
    give_back: set[str] = field(default_factory=set)
    leased: dict[int, list[int]] = field(default_factory=dict)


#: Upper bounds (seconds) of the task-duration histogram in the stats.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


@dataclass
class Durations:
    """How long tasks ran, from lease to result, as a histogram of :data:`DURATION_BUCKETS`.

    Every backend keeps one in its stats, so that ``/metrics`` can show
    ``distproc_task_duration_seconds`` whichever backend is in use.
    """

    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        # The first bound >= seconds (the bounds are sorted); past them all: the last count.
        self.counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds

    def to_wire(self) -> dict[str, Any]:
        """``{"buckets": [[upper bound, count <= it], ...], "sum", "count"}``; the last
        bound is ``"+Inf"``, the counts are cumulative (Prometheus' histogram)."""
        bounds: list[float | str] = [*DURATION_BUCKETS, "+Inf"]
        running = list(itertools.accumulate(self.counts))
        return {"buckets": [list(pair) for pair in zip(bounds, running, strict=True)],
                "sum": self.total, "count": running[-1]}  # fmt: skip


@dataclass(frozen=True)
class Joined:
    """A worker's id after :meth:`TaskBackend.add_worker` (``resumed``: it kept its leases)."""

    worker: str
    resumed: bool
    reason: str = ""


class TaskBackend(abc.ABC):
    """Task state behind one seam: see the module docstring.

    ``store_id`` names the store: it changes only when the state is new (a
    memory store at every start, a file when it is created), so a master or a
    worker that comes back with an id of another store is told it is unknown.
    """

    #: Shown by ``distproc status``: ``memory``, ``sqlite``, ...
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def __init__(self, *, max_attempts: int = 3, heartbeat_timeout: float = 10.0) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if heartbeat_timeout <= 0:
            raise ValueError("heartbeat_timeout must be positive")
        self.max_attempts = max_attempts
        self.heartbeat_timeout = heartbeat_timeout
        self.store_id = ""
        self.notices = Notices()
        #: Set while the host shuts down: workers that go then are not news.
        self.closing = False

    def take_notices(self) -> Notices:
        notices, self.notices = self.notices, Notices()
        return notices

    # ------------------------------------------------------------ masters
    @abc.abstractmethod
    def add_master(self, grace: float) -> tuple[int, int]:
        """A new master: its id and the first task id it may use.

        A master that goes away (:meth:`detach_master`) keeps its tasks for
        ``grace`` seconds; 0 drops them at once.
        """

    @abc.abstractmethod
    def resume_master(self, mid: int) -> str:
        """A master is back: ``""`` if it is known (and attached again), else why not."""

    @abc.abstractmethod
    def detach_master(self, mid: int) -> None:
        """A master's connection is gone: keep its state for its grace, then drop it."""

    @abc.abstractmethod
    def drop_master(self, mid: int) -> None:
        """A master is gone for good: its queued tasks are cancelled, its outcomes forgotten."""

    @abc.abstractmethod
    def enqueue(self, mid: int, specs: list[TaskSpec]) -> None:
        """Queue tasks of master ``mid``.  Ids it has used before are skipped: a master
        that sends a batch again after losing its connection does not queue it twice."""

    @abc.abstractmethod
    def cancel(self, mid: int, tids: list[int]) -> list[int]:
        """Cancel those of ``tids`` that have not started; return them."""

    @abc.abstractmethod
    def outcomes(self, mid: int, after: int, max_items: int) -> list[Outcome]:
        """Forget master ``mid``'s outcomes up to ``after`` (it has them); return the next ones."""

    # ------------------------------------------------------------ workers
    @abc.abstractmethod
    def add_worker(self, hello: WorkerHello) -> Joined:
        """A worker joins, or comes back (``hello.resume``) and keeps what it holds."""

    @abc.abstractmethod
    def knows_worker(self, wid: str) -> bool: ...

    @abc.abstractmethod
    def touch_worker(self, wid: str) -> None:
        """The worker is alive (it called)."""

    @abc.abstractmethod
    def report(self, wid: str, reports: list[Report]) -> None:
        """Record a worker's results; a late one (not for the current lease) is discarded."""

    @abc.abstractmethod
    def lease(self, wid: str, want: int) -> list[Lease]:
        """Up to ``want`` tasks for worker ``wid`` (fewer by the rules of :mod:`..policy`)."""

    @abc.abstractmethod
    def give_back(self, wid: str, tids: list[int]) -> None:
        """The worker returns leased tasks it has not started: first in the queue again."""

    @abc.abstractmethod
    def leave(self, wid: str, tids: list[int]) -> None:
        """The worker is stopping: it returns ``tids`` and takes no new tasks."""

    @abc.abstractmethod
    def lose_worker(self, wid: str, how: str) -> None:
        """The worker is gone (``how``): its leases go back to the queue, or die."""

    @abc.abstractmethod
    def ask_give_back(self, idle: str) -> None:
        """``idle`` waits and nothing is queued: ask hoarders to give tasks back."""

    @abc.abstractmethod
    def take_give_back(self, wid: str) -> int:
        """How many tasks ``wid`` was asked to give back (and forget the request)."""

    @abc.abstractmethod
    def holds_leases(self, wid: str) -> bool: ...

    @abc.abstractmethod
    def is_leaving(self, wid: str) -> bool: ...

    @abc.abstractmethod
    def worker_count(self) -> int: ...

    # -------------------------------------------------------------- time
    @abc.abstractmethod
    def expire(self) -> None:
        """Do what is due: silent workers lost, retries queued, absent masters dropped,
        functions that nobody can import failed."""

    @abc.abstractmethod
    def next_due(self) -> float:
        """When :meth:`expire` next has something to do (``time.monotonic()`` clock)."""

    # -------------------------------------------------------- inspection
    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """The ``"kind": "tasks"`` status report (counts, workers, dead letters, store)."""

    @abc.abstractmethod
    def dead_letters(self) -> list[DeadLetter]: ...

    @abc.abstractmethod
    def requeue_dead(self, tids: Iterable[int]) -> list[int]:
        """Queue these dead letters again (their results go to no master); return those found."""

    # -------------------------------------------------------- durability
    @abc.abstractmethod
    def commit(self) -> None:
        """Make the transitions since the last commit durable (raise ``StoreError`` if not)."""

    @abc.abstractmethod
    def reload(self) -> None:
        """After a failed :meth:`commit`: go back to the state last committed."""

    def describe(self) -> dict[str, Any]:
        """The store, for ``distproc status``: its kind, capabilities and (for files) where."""
        return {"backend": self.name, "store": self.store_id,
                "capabilities": self.capabilities.to_wire()}  # fmt: skip

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the backend holds (a file, a connection)."""
