"""How a master and a worker reach their task backend, so neither branches on it.

A *channel* is the one object an :class:`~.executor.Executor` (a
:class:`MasterChannel`) or a worker slot (a :class:`WorkerChannel`) talks to.
Today every backend sits behind a distproc task service, reached in one of
two ways:

* :class:`HostedMasterChannel`: the Executor hosts the service on a thread
  of its own process and calls it on its loop, with no connection;
* :class:`RemoteMasterChannel` and :class:`ServiceWorkerChannel`: over a
  connection to ``distproc serve`` (or another process's Executor).

A backend that masters and workers reach directly (Redis) gets channels of
its own that implement the same methods with the backend's client.

**A remote master comes back.**  When its connection fails, the channel
connects again with backoff for up to ``reconnect_timeout`` seconds and says
hello with its master id and the id of the store it knew.  A service with
that store (a durable one, restarted) gives the master its tasks back, and
the master carries on: a batch that was not acknowledged is sent again (the
service skips ids it has), and outcomes are confirmed by their sequence
number, so none is lost and none is taken twice.  A service that does not
know the master (a store kept in memory, restarted) or that does not come
back in time ends the master with :class:`~distproc.errors.ServiceLostError`:
pending futures fail with it at once, and so does every later call.
"""

from __future__ import annotations

import abc
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..addresses import format_address
from ..errors import RemoteError, ServiceLostError, StoreError
from .host import close_service, connect_service
from .records import Lease, Outcome, Report, TaskSpec, WorkerHello, split_by_size

if TYPE_CHECKING:
    from ..tls import TLSConfig
    from .host import ServiceHost

__all__ = [
    "FIRST_BACKOFF",
    "MAX_BACKOFF",
    "HostedMasterChannel",
    "MasterChannel",
    "MasterEnd",
    "RemoteMasterChannel",
    "ServiceWorkerChannel",
    "WorkerChannel",
    "backoff_delays",
    "send_outbox",
]

log = logging.getLogger("distproc.tasks")

#: Reconnecting waits FIRST_BACKOFF, then twice as long each time, at most MAX_BACKOFF.
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0
#: A master's long poll for outcomes waits this long in one call.
POLL_WAIT = 0.5
POLL_MAX = 10_000


def backoff_delays() -> Callable[[], float]:
    """A source of reconnect delays: exponential with jitter, capped at MAX_BACKOFF."""
    state = [FIRST_BACKOFF]

    def next_delay() -> float:
        delay = state[0] * (0.5 + random.random())
        state[0] = min(state[0] * 2, MAX_BACKOFF)
        return delay

    return next_delay


def send_outbox(
    end: MasterEnd,
    wake: threading.Event,
    closed: Callable[[], bool],
    submit: Callable[[list[TaskSpec]], object],
) -> None:
    """A master channel's sending thread: each time ``wake`` is set, hand the tasks in
    the master's outbox to ``submit`` in parts that fit a frame, until the master is
    finished or the channel ``closed``.

    A lost service breaks the master; a part that ``submit`` refuses (a bad task,
    or one the store could not keep) fails those tasks alone.
    """
    while True:
        wake.wait()
        wake.clear()
        batch = end.take_outbox()
        if not batch:
            if end.finished() or closed():
                return
            continue
        for part in split_by_size(batch, lambda spec: len(spec.payload)):
            try:
                submit(part)
            except ServiceLostError as exc:
                end.on_broken(exc)
                return
            except Exception as exc:  # refused (a bad task), or not stored (StoreError)
                end.on_failed(part, exc)


def _connection_failed(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection (or the service behind it) is gone."""
    if isinstance(exc, (OSError, EOFError)):
        return True
    # A proxy that reconnected by itself reaches a new server without our object.
    return isinstance(exc, RemoteError) and "no shared object" in str(exc)


# ------------------------------------------------------------------ masters
class MasterEnd(Protocol):
    """The master's side of a channel (the Executor)."""

    def take_outbox(self) -> list[TaskSpec]:
        """The tasks submitted since the last call, in order."""
        ...

    def on_outcomes(self, outcomes: list[Outcome]) -> None:
        """Finished tasks (one may come twice after a reconnect: it completes once)."""
        ...

    def on_failed(self, specs: list[TaskSpec], exc: BaseException) -> None:
        """These tasks were refused or could not be stored: their futures fail."""
        ...

    def on_broken(self, exc: BaseException) -> None:
        """The service is lost for good: everything pending fails, and every later call."""
        ...

    def finished(self) -> bool:
        """Shut down, with nothing left to wait for."""
        ...


class MasterChannel(abc.ABC):
    """A master's way to its backend.  :attr:`base` is the first task id it may use."""

    mid: int
    base: int

    @abc.abstractmethod
    def start(self, end: MasterEnd) -> None:
        """Join as a master and start delivering outcomes to ``end``."""

    @abc.abstractmethod
    def kick(self) -> None:
        """There are tasks in the outbox: send them soon."""

    @abc.abstractmethod
    def cancel(self, tids: list[int]) -> list[int]:
        """Cancel those of ``tids`` that have not started; return them."""

    @abc.abstractmethod
    def status(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def worker_count(self) -> int | None:
        """The workers connected now, if known without a round trip."""

    @abc.abstractmethod
    def close(self) -> None:
        """Leave (queued tasks of this master are cancelled) and release the connection."""


class HostedMasterChannel(MasterChannel):
    """A master in the process that hosts the service: calls on its loop, no connection."""

    def __init__(self, host: ServiceHost) -> None:
        self.host = host
        self._end: MasterEnd | None = None

    def _service(self) -> Any:
        service = self.host.service
        assert service is not None
        return service

    def start(self, end: MasterEnd) -> None:
        self._end = end
        self.mid, self.base = self.host.run(self._service().add_master, end.on_outcomes)

    def kick(self) -> None:
        self.host.call_soon(self._flush)

    def _flush(self) -> None:  # on the service's loop
        end = self._end
        assert end is not None
        batch = end.take_outbox()
        if not batch:
            return

        def stored(exc: BaseException | None) -> None:
            if exc is not None:
                end.on_failed(batch, exc)

        self._service().add_tasks(self.mid, batch, stored)

    def cancel(self, tids: list[int]) -> list[int]:
        done: list[int] = self.host.run(self._service().cancel_tasks, self.mid, tids)
        return done

    def status(self) -> dict[str, Any]:
        report: dict[str, Any] = self.host.run(self._service().__distproc_status__)
        return report

    def worker_count(self) -> int | None:
        service = self.host.service
        return None if service is None else int(service.worker_count())

    def close(self) -> None:
        """Nothing to release: the host stops with the Executor."""


class _Session:
    """One connection of a remote master, after its hello."""

    def __init__(self, manager: Any, proxy: Any) -> None:
        self.manager = manager
        self.proxy = proxy


class RemoteMasterChannel(MasterChannel):
    """A master of a service in another process: see the module docstring.

    Two threads: one sends batches of tasks (each answered once the service
    has stored it), one long-polls for outcomes, confirming those it got.
    """

    def __init__(
        self,
        address: tuple[str, int],
        authkey: bytes,
        *,
        reconnect_timeout: float = 300.0,
        tls: TLSConfig | None = None,
    ) -> None:
        self.address = address
        self.authkey = authkey
        self.tls = tls
        self.reconnect_timeout = reconnect_timeout
        self._where = format_address(address)
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._lost: ServiceLostError | None = None
        self._closed = False
        self._closed_event = threading.Event()
        self._wake = threading.Event()
        self._after = 0  # the last outcome received (confirmed with the next poll)
        self._end: MasterEnd | None = None
        self._threads: list[threading.Thread] = []
        # The first contact: a refusal or no service at all is the caller's error.
        manager, proxy = connect_service(address, authkey, tls)
        reply = proxy.hello_master(None, reconnect_timeout)
        self.mid, self.base, self.store = int(reply["master"]), int(reply["base"]), reply["store"]
        self._session = _Session(manager, proxy)

    def start(self, end: MasterEnd) -> None:
        self._end = end
        for target, name in ((self._send_loop, "distproc-submit"),
                             (self._receive_loop, "distproc-results")):  # fmt: skip
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    # ------------------------------------------------------ connection
    def _current(self) -> _Session:
        """The session, connecting again (with backoff, until the deadline) if need be."""
        with self._lock:
            if self._lost is not None:
                raise self._lost
            if self._session is not None:
                return self._session
            if self._closed:
                raise ServiceLostError(f"the Executor's connection to {self._where} is closed")
            deadline = time.monotonic() + self.reconnect_timeout
            delay = backoff_delays()
            said = False
            while True:
                try:
                    self._session = self._resume()
                    if said:
                        log.warning("the task service at %s is back: master %d goes on",
                                    self._where, self.mid)  # fmt: skip
                    return self._session
                except ServiceLostError as exc:
                    self._lost = exc
                    raise
                except Exception as exc:
                    if not _connection_failed(exc):
                        raise
                    if not said:
                        log.warning(
                            "lost the task service at %s (%s); reconnecting for up to %g s",
                            self._where, exc, self.reconnect_timeout,
                        )  # fmt: skip
                        said = True
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    self._lost = ServiceLostError(
                        f"the task service at {self._where} did not come back within "
                        f"{self.reconnect_timeout:g} s (reconnect_timeout); the master's "
                        "unfinished tasks are given up"
                    )
                    raise self._lost
                self._closed_event.wait(min(delay(), left))

    def _resume(self) -> _Session:
        manager, proxy = connect_service(self.address, self.authkey, self.tls)
        try:
            reply = proxy.hello_master({"store": self.store, "master": self.mid},
                                       self.reconnect_timeout)  # fmt: skip
        except BaseException:
            close_service(manager)
            raise
        if not reply.get("resumed"):
            close_service(manager)
            raise ServiceLostError(
                f"the task service at {self._where} came back without this master's tasks: "
                f"{reply.get('reason', 'it does not know it')}; they are lost (serve with "
                "--store FILE for a service whose tasks survive a restart)"
            )
        return _Session(manager, proxy)

    def _drop(self, session: _Session) -> None:
        with self._lock:
            if self._session is session:
                self._session = None
        close_service(session.manager)

    def _call(self, method: str, *args: Any) -> Any:
        """``method(master, *args)`` on the service, across reconnects."""
        while True:
            session = self._current()
            try:
                return getattr(session.proxy, method)(self.mid, *args)
            except KeyError:
                self._drop(session)  # the service does not know us on that connection
            except Exception as exc:
                if not _connection_failed(exc):
                    raise
                self._drop(session)

    # ---------------------------------------------------------- threads
    def kick(self) -> None:
        self._wake.set()

    def _send_loop(self) -> None:
        assert self._end is not None
        send_outbox(
            self._end, self._wake, lambda: self._closed,
            lambda part: self._call("submit", [spec.to_wire() for spec in part]),
        )  # fmt: skip

    def _receive_loop(self) -> None:
        end = self._end
        assert end is not None
        while not end.finished() and not self._closed:
            try:
                got = self._call("results", POLL_MAX, POLL_WAIT, self._after)
            except ServiceLostError as exc:
                end.on_broken(exc)
                return
            except StoreError as exc:  # the confirmation could not be stored: ask again
                log.warning("%s", exc)
                self._closed_event.wait(POLL_WAIT)  # the store is full: give it time
                continue
            except Exception as exc:
                end.on_broken(exc)
                return
            if got:
                outcomes = [Outcome.from_wire(o) for o in got]
                self._after = outcomes[-1].seq
                end.on_outcomes(outcomes)

    # ------------------------------------------------------------ calls
    def cancel(self, tids: list[int]) -> list[int]:
        return list(self._call("cancel", tids))

    def status(self) -> dict[str, Any]:
        session = self._current()
        report: dict[str, Any] = session.proxy.status()
        return report

    def worker_count(self) -> int | None:
        return None

    def close(self) -> None:
        self._closed = True
        self._closed_event.set()
        self._wake.set()
        with self._lock:
            session, self._session = self._session, None
        if session is None:
            return
        try:
            session.proxy.goodbye_master(self.mid)
        except Exception as exc:
            log.debug("goodbye to %s: %s", self._where, exc)
        close_service(session.manager)


# ------------------------------------------------------------------ workers
class WorkerChannel(abc.ABC):
    """One worker slot's way to its backend (one connection)."""

    @abc.abstractmethod
    def join(self, hello: WorkerHello) -> dict[str, Any]:
        """Join, or come back: ``{"worker", "heartbeat", "store", "resumed", "reason"}``."""

    @abc.abstractmethod
    def exchange(
        self, wid: str, reports: list[Report], want: int, wait: float
    ) -> list[Lease] | None:
        """Report results and take up to ``want`` tasks; ``None``: join again."""

    @abc.abstractmethod
    def heartbeat(self, wid: str, hold: float) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def give_back(self, wid: str, tids: list[int]) -> None: ...

    @abc.abstractmethod
    def goodbye(self, wid: str, tids: list[int]) -> None: ...

    @abc.abstractmethod
    def initializer_failed(self, wid: str, record: dict[str, Any]) -> None:
        """The initializer that the join's reply named raised (``record``: its error)."""

    @abc.abstractmethod
    def close(self) -> None: ...


class ServiceWorkerChannel(WorkerChannel):
    """A worker slot's connection to a task service."""

    def __init__(
        self, address: tuple[str, int], authkey: bytes, tls: TLSConfig | None = None
    ) -> None:
        self.manager, self._proxy = connect_service(address, authkey, tls)

    @property
    def service(self) -> Any:
        proxy = self._proxy
        if proxy is None:
            raise ConnectionError("this connection to the task service was closed")
        return proxy

    def join(self, hello: WorkerHello) -> dict[str, Any]:
        reply: dict[str, Any] = self.service.hello_worker(hello.to_wire())
        return reply

    def exchange(
        self, wid: str, reports: list[Report], want: int, wait: float
    ) -> list[Lease] | None:
        got = self.service.exchange(wid, [r.to_wire() for r in reports], want, wait)
        return None if got is None else [Lease.from_wire(x) for x in got]

    def heartbeat(self, wid: str, hold: float) -> dict[str, Any] | None:
        news: dict[str, Any] | None = self.service.heartbeat(wid, hold)
        return news

    def give_back(self, wid: str, tids: list[int]) -> None:
        self.service.give_back(wid, tids)

    def goodbye(self, wid: str, tids: list[int]) -> None:
        self.service.goodbye(wid, tids)

    def initializer_failed(self, wid: str, record: dict[str, Any]) -> None:
        self.service.initializer_failed(wid, record)

    def close(self) -> None:
        self._proxy = None  # drops this slot's reference to the service object
