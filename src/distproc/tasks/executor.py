"""``distproc.Executor``: the master's side of the task system.

A :class:`concurrent.futures.Executor` whose tasks run on workers of a task
service (:mod:`.service`):

* ``Executor(workers=4)`` (or ``Executor(4)``, ``Executor(max_workers=4)``,
  ``Executor()`` for one per CPU, as ``ProcessPoolExecutor``): a private
  service on a loopback port with a random authkey, and four local worker
  processes: a process pool, ready when the constructor returns;
* ``Executor(address=("0.0.0.0", 5000), authkey=key, workers=N)``: the same
  service, also open to remote ``distproc worker HOST:5000`` processes;
* ``Executor(connect=(host, port), authkey=key)``: submit to a service that
  ``distproc serve`` hosts and other masters share.

``http=(host, port)`` also serves the dashboard of the service it hosts
there (:mod:`distproc.web`; ``dashboard_url`` is the address to open).

When the Executor hosts the service, it runs on a thread of this process and
the Executor talks to it on its loop, with no connection in between; with
``store="tasks.db"`` that service keeps its tasks in a SQLite file.  Tasks and
results are sent in batches either way (:mod:`.channels`).  A master of a
remote service that goes away reconnects for ``reconnect_timeout`` seconds;
a durable service that comes back gives it every outcome of the tasks it
submitted, each future completing once.  Otherwise its pending futures, and
every later call, fail with :class:`~distproc.errors.ServiceLostError`.

``tls=distproc.TLSConfig(...)``: the service it hosts requires mutual TLS,
and its own workers get the same files (``DISTPROC_TLS_*``); with
``connect=``, it connects with TLS.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import itertools
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any, TypeVar

from ..addresses import format_address, is_loopback
from ..errors import (
    FrameTooLargeError,
    StartError,
    TaskImportError,
    TaskTimeoutError,
    WorkerLostError,
)
from ..server import ServerConfig
from ..wire.framing import DEFAULT_MAX_FRAME
from .blockmap import READ_AHEAD, BlockReader, BlockRun, LinesOut, input_size
from .channels import HostedMasterChannel, MasterChannel, RemoteMasterChannel
from .fleet import Fleet, local_workers
from .host import ServiceHost
from .map_status import MapStatus
from .mapping import MapRun
from .payloads import NATIVE, PICKLE, PICKLED_CALLABLE, decode, encode, function_ref, rebuild_error
from .pool import check_pool_arguments, default_workers, initializer_failed
from .records import ERROR, LOST, OK, TIMEOUT, UNAVAILABLE, Outcome, TaskOptions, TaskSpec

if TYPE_CHECKING:
    from ..tls import TLSConfig
    from .progress import ProgressBar

__all__ = ["Executor"]

_T = TypeVar("_T")

log = logging.getLogger("distproc.tasks")

#: Room left in a frame for what travels with a task's payload (ids, options).
ENVELOPE = 64 * 1024
#: Room left in a block's payload for its first line number and flags.
ENVELOPE_OF_BLOCK = 1024
#: Seconds the constructor waits for its local worker processes to join.
READY_TIMEOUT = 60.0


class _Pending:
    """How many tasks are unfinished: ``take()`` waits while ``limit`` are.

    ``take(wait=False)`` goes over the limit without waiting: the calls of a
    lost ``map`` chunk are sent again at once, from a thread that must not block.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._count = 0
        self._cond = threading.Condition(threading.Lock())

    def take(self, wait: bool = True) -> None:
        with self._cond:
            while wait and self._count >= self._limit:
                self._cond.wait()
            self._count += 1

    def release(self) -> None:
        with self._cond:
            self._count -= 1
            self._cond.notify()


class Executor(concurrent.futures.Executor):
    """Run functions on distproc workers; see the module docstring.

    ``max_attempts``: how many workers a task may take down (die or stop
    answering while they run it) before its future fails with
    :class:`~distproc.errors.WorkerLostError`.  ``heartbeat_timeout``: how
    long a silent worker keeps its tasks.  ``serializer``: ``'native'`` (the
    default: arguments and results travel with the native codec, which never
    unpickles) or ``'pickle'`` (any picklable object; for trusted networks).
    ``max_pending``: ``submit()`` blocks while this many tasks are unfinished.
    ``task_timeout``: the default per-task timeout.  ``retry_on``: exception
    types after which a task runs again, up to ``max_retries`` times, waiting
    ``retry_backoff`` s, doubled each time.  ``progress``: ``map`` draws a
    progress bar on stderr (default: when stderr is a terminal).  ``store``:
    a path makes the hosted service keep its tasks in that SQLite file
    (``store_sync``: ``"full"``, the default, or ``"normal"``).
    ``reconnect_timeout``: how long a master of a remote service
    (``connect=``) keeps reconnecting when it goes away.
    ``connect="redis://HOST:PORT/DB"`` (or ``rediss://``) submits to a queue in
    Redis that ``distproc worker redis://...`` processes serve, with no
    distproc server between (``queue``: its name, default ``default``; needs
    ``distproc[redis]``); this master's ``max_attempts`` and
    ``heartbeat_timeout`` become the queue's; ``workers=N`` starts N local
    ``distproc worker`` processes on that queue too.  ``http``: serve the
    dashboard and ``/metrics`` of the hosted service at this ``(host, port)``;
    ``http_token``: the token it needs (by default, one derived from the
    authkey, needed on a non-loopback address only).

    ``ProcessPoolExecutor``'s arguments mean what they mean there:
    ``max_workers`` (also the first positional argument) is ``workers``
    under the stdlib's name, with its check; with neither, nor ``address``
    or ``connect``, the pool has a worker process per CPU.  ``initializer(
    *initargs)`` runs in each worker process before its first task, in the
    local ones and in remote ``distproc worker`` processes alike (the service
    hands it to each worker that joins); one that raises breaks the
    Executor as it breaks the stdlib's pool: pending futures and later
    ``submit()`` calls fail with ``BrokenProcessPool``.  ``max_tasks_per_child``:
    a worker process ends after that many tasks and its supervisor (the
    Executor's fleet, or ``distproc worker -c N``) starts a fresh one.
    ``mp_context`` is accepted and changes nothing: distproc's workers are
    always fresh interpreters (``python -m distproc worker``, as the spawn
    start method makes them), never forks of this process, so they import
    task functions by name and every start method behaves alike (and
    ``max_tasks_per_child`` is allowed with a fork context, which the
    stdlib's pool refuses).  ``initializer`` and ``max_tasks_per_child``
    need the Executor's own service: not with ``connect=``.
    """

    def __init__(
        self,
        address: tuple[str, int] | int | None = None,
        authkey: bytes | str | None = None,
        *,
        workers: int = 0,
        max_workers: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        mp_context: Any = None,
        connect: tuple[str, int] | str | None = None,
        queue: str | None = None,
        max_attempts: int = 3,
        heartbeat_timeout: float = 10.0,
        serializer: str = "native",
        max_pending: int = 100_000,
        task_timeout: float | None = None,
        retry_on: Iterable[type[BaseException]] = (),
        max_retries: int = 3,
        retry_backoff: float = 0.5,
        progress: bool | None = None,
        server_config: ServerConfig | None = None,
        store: str | None = None,
        store_sync: str = "full",
        reconnect_timeout: float = 300.0,
        http: tuple[str, int] | None = None,
        http_token: str | None = None,
        sock: socket.socket | None = None,
        fleet: Fleet | None = None,
        tls: TLSConfig | None = None,
    ) -> None:
        if http is not None and connect is not None:
            raise ValueError(
                "http= shows the service that this Executor hosts; for a service elsewhere, "
                "run `distproc dashboard HOST:PORT`"
            )
        if isinstance(address, int):
            # Executor(4), as ProcessPoolExecutor(4): the first positional is max_workers.
            if max_workers is not None:
                raise TypeError("Executor() got max_workers as its first argument and by name")
            address, max_workers = None, address
        check_pool_arguments(max_workers, initializer, max_tasks_per_child)
        if max_workers is not None:
            if workers:
                raise ValueError("pass max_workers or workers (the same thing), not both")
            workers = max_workers
        if connect is None and address is None and not workers and fleet is None and sock is None:
            workers = default_workers()  # ProcessPoolExecutor(): a worker per CPU
        if connect is not None and (initializer is not None or max_tasks_per_child is not None):
            raise ValueError(
                "initializer and max_tasks_per_child are handed to workers by the Executor's "
                "own service: with connect=, pass them to no Executor; run such set-up at "
                "the top of the task functions' module instead"
            )
        if serializer not in ("native", "pickle"):
            raise ValueError(f"serializer must be 'native' or 'pickle', not {serializer!r}")
        if isinstance(authkey, str):
            authkey = authkey.encode("utf-8")  # as BaseManager takes it
        if authkey is not None and not isinstance(authkey, bytes):
            raise TypeError(f"authkey must be bytes or str, not {type(authkey).__name__}")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if workers < 0:
            raise ValueError("workers must be 0 or more")
        redis_url = connect if isinstance(connect, str) else None
        if connect is not None and (
            address is not None or store is not None or sock or fleet
            or (workers and redis_url is None)
        ):
            raise ValueError(
                "connect= submits to another service: leave address, workers and store out"
            )
        if queue is not None and not isinstance(connect, str):
            raise ValueError("queue= names a queue in Redis: pass connect='redis://...' too")
        if fleet is not None and workers:
            raise ValueError("fleet= is the local workers, already started: leave workers out")
        self.serializer = serializer
        self._mp_context = mp_context  # accepted, see the class docstring
        self._codec = PICKLE if serializer == "pickle" else NATIVE
        self._allow_pickle = serializer == "pickle"
        self._progress = progress
        self._opts: dict[str, Any] = {}
        if task_timeout is not None:
            self._opts["timeout"] = float(task_timeout)
        retry_names = [f"{c.__module__}:{c.__qualname__}" for c in retry_on]
        if retry_names:
            self._opts.update(retry_on=retry_names, retries=max_retries, backoff=retry_backoff)
        self._refs: dict[Any, str] = {}
        self._lock = threading.Lock()
        self._futures: dict[int, concurrent.futures.Future[Any]] = {}
        self._outbox: list[TaskSpec] = []
        self._flushing = False
        self._slots = _Pending(max_pending)
        self._shutdown = False
        #: Set when the service is lost for good: every later call raises it.
        self._broken: BaseException | None = None
        self._host: ServiceHost | None = None
        self._fleet: Fleet | None = None
        self._channel: MasterChannel
        #: The address of the dashboard to open (with its token), when ``http`` is given.
        self.dashboard_url: str | None = None
        if authkey is None:
            env = os.environ.get("DISTPROC_AUTHKEY")
            if env:
                authkey = env.encode()
            elif address is not None and not is_loopback(address[0]):
                raise ValueError(
                    f"an Executor that listens on {address[0]} needs an authkey that its "
                    "workers know: pass authkey=... or set DISTPROC_AUTHKEY"
                )
            else:
                authkey = secrets.token_hex(16).encode()
        self.authkey: bytes = authkey
        self.address: tuple[str, int] | None = None
        # A task reaches a worker in one frame, which a worker's connection takes
        # up to DEFAULT_MAX_FRAME; a service of ours may take less.
        frame = DEFAULT_MAX_FRAME
        if connect is None and server_config is not None:
            frame = min(frame, server_config.max_frame)
        self._frame_limit = frame
        self.max_task_bytes = frame - ENVELOPE
        # Made before the service starts: an initializer that cannot travel is refused first.
        setup = self._worker_setup(initializer, initargs, max_tasks_per_child)
        if isinstance(connect, str):  # a queue in Redis: no service of ours in between
            from .redis_channels import RedisMasterChannel

            self._channel = RedisMasterChannel(
                connect, queue, max_attempts=max_attempts, heartbeat_timeout=heartbeat_timeout,
                reconnect_timeout=reconnect_timeout,
            )  # fmt: skip
        elif connect is not None:
            self._channel = RemoteMasterChannel(connect, self.authkey, tls=tls,
                                                reconnect_timeout=reconnect_timeout)  # fmt: skip
            self.address = (connect[0], connect[1])
        else:
            self._host = self._host_service(
                address, server_config, http, http_token, max_attempts=max_attempts,
                heartbeat_timeout=heartbeat_timeout, store=store, sync=store_sync, sock=sock,
                tls=tls,
            )  # fmt: skip
            self.address = self._host.address
            self._channel = HostedMasterChannel(self._host)
            self._host.run(self._attach, self._host.service, setup)
        self._channel.start(self)
        self._ids = itertools.count(self._channel.base + 1)
        if workers:
            if redis_url is not None:  # workers in Redis are not counted: none to wait for
                self._fleet = local_workers(redis_url, self.authkey, workers, queue=queue,
                                            allow_pickle=self._allow_pickle)  # fmt: skip
            else:
                assert self.address is not None
                self._fleet = local_workers(self.address, self.authkey, workers,
                                            allow_pickle=self._allow_pickle, tls=tls)  # fmt: skip
                try:
                    self._await_workers(workers)
                except BaseException:  # a Ctrl-C while the pool starts: stop what was started
                    self.shutdown(wait=False)
                    raise
        elif fleet is not None:
            self._fleet = fleet
        if self._fleet is not None:
            self._fleet.when_refused(self._workers_refused)

    # ------------------------------------------------------------- set-up
    def _host_service(
        self,
        address: tuple[str, int] | None,
        config: ServerConfig | None,
        http: tuple[str, int] | None,
        http_token: str | None,
        **options: Any,
    ) -> ServiceHost:
        """Start the hosted service, with its dashboard when ``http`` is given."""
        sock = None
        if http is not None:
            from .. import web  # the dashboard's libraries are loaded only when it is asked for

            try:  # first: a port in use is an error before anything starts
                sock = web.bind(http)
            except OSError as exc:  # named by its address, as the service's own bind is not
                raise OSError(exc.errno, exc.strerror, format_address(http)) from None
        try:
            host = ServiceHost(address or ("127.0.0.1", 0), self.authkey, config=config,
                               **options)  # fmt: skip
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        if sock is not None:
            side = web.attach(host.server, sock, self.authkey, http_token)
            self.dashboard_url = side.login_url
        host.start()
        return host

    def _attach(self, service: Any, setup: dict[str, Any]) -> None:
        """On the loop of the service this Executor hosts: what it tells this Executor,
        and what it hands each worker (see :meth:`_worker_setup`)."""
        service.on_leased = self._on_leased
        service.on_initializer_failed = self._on_initializer_failed
        service.worker_setup = setup

    def _on_leased(self, tids: list[int]) -> None:
        """A worker took these tasks (on the service's loop): their futures are running."""
        with self._lock:
            futures = [f for f in map(self._futures.get, tids) if f is not None]
        for future in futures:
            # Pending only: a lost task leased again stays running; a cancelled one is
            # left as it is (False: cancelled here meanwhile).
            if not future.running() and not future.done():
                future.set_running_or_notify_cancel()

    def _worker_setup(
        self, initializer: Callable[..., object] | None, initargs: tuple[Any, ...],
        max_tasks: int | None,
    ) -> dict[str, Any]:  # fmt: skip
        """What the service hands each joining worker: the initializer and the task limit."""
        setup: dict[str, Any] = {}
        if initializer is not None:
            ref = self._ref(initializer)
            setup["init"] = [ref or PICKLED_CALLABLE,
                             self._payload(ref, initializer, tuple(initargs), {})]  # fmt: skip
        if max_tasks is not None:
            setup["max_tasks"] = max_tasks
        return setup

    def _on_initializer_failed(self, worker: str, record: Any) -> None:
        """A worker's initializer raised (on the service's loop): the pool is broken."""
        with self._lock:
            if self._broken is not None:
                return
        self.on_broken(initializer_failed(worker, record))
        if self._fleet is not None:  # as the stdlib's pool ends its processes
            threading.Thread(target=self._fleet.kill, name="distproc-broken", daemon=True).start()

    def _await_workers(self, count: int) -> None:
        """Return once ``count`` local workers have joined (a pool that is ready), or it is
        broken, refused, or :data:`READY_TIMEOUT` has passed (tasks then wait in the queue)."""
        fleet = self._fleet
        assert fleet is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while (self._count_workers() or 0) < count and self._broken is None:
            if fleet.refused or time.monotonic() > deadline:
                return
            fleet.stopping.wait(0.01)

    # ------------------------------------------------------------ submitting
    def _ref(self, fn: Callable[..., Any]) -> str:
        """``fn``'s ``'module:qualname'``, or ``''``: it travels pickled with the arguments.

        Only functions found by name are remembered (in ``_refs``): a bound
        method or a callable object is never kept here past its task.
        """
        try:
            return self._refs[fn]
        except (KeyError, TypeError):
            pass
        try:
            ref = function_ref(fn)
        except TypeError as exc:
            if self._allow_pickle:
                return ""  # the callable travels pickled, with the arguments
            raise TypeError(
                f"{exc} (or choose serializer='pickle' for a callable object that pickle "
                "can send)"
            ) from None
        with contextlib.suppress(TypeError):
            self._refs[fn] = ref
        return ref

    def _payload(self, ref: str, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        if not ref:
            payload = encode(((fn, *args), kwargs), PICKLE)
        else:
            payload = encode((args, kwargs), self._codec)
        self._check_size(len(payload))
        return payload

    def _check_size(self, size: int) -> None:
        """Refuse, here, a task that could never reach a worker (rather than lose workers)."""
        if size <= self.max_task_bytes:
            return
        limit = self._frame_limit
        if limit < DEFAULT_MAX_FRAME:
            how = (f"raise ServerConfig(max_frame=...) of the Executor's service, up to "
                   f"{DEFAULT_MAX_FRAME:,} bytes, or pass")  # fmt: skip
        else:
            how = "pass"
        raise FrameTooLargeError(
            f"the task's arguments take {size:,} bytes encoded; a task can take at "
            f"most {self.max_task_bytes:,} (the frame limit of {limit:,} bytes, less room for "
            f"the task's envelope): {how} large data another way, such as a path or URL "
            "that the workers can read"
        )

    def submit(  # type: ignore[override]  # `timeout` is the task's, as documented
        self, fn: Callable[..., Any], /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on a worker; ``timeout`` (s) stops it if it runs longer.

        ``timeout`` is taken by ``submit`` itself: to pass a ``timeout``
        argument to ``fn``, wrap the call in a function of your own.
        """
        ref = self._ref(fn)
        opts = self._opts
        if timeout is not None:
            opts = {**opts, "timeout": float(timeout)}
        return self._enqueue(ref, self._payload(ref, fn, args, kwargs), opts or None)

    def _enqueue(
        self, ref: str, payload: bytes, opts: Any, *, wait: bool = True
    ) -> concurrent.futures.Future[Any]:
        """Queue a task; ``wait=False`` goes past ``max_pending`` rather than wait."""
        options = TaskOptions.from_wire(opts or None)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._slots.take(wait)
        with self._lock:
            if self._broken is not None:
                self._slots.release()
                raise self._broken
            if self._shutdown:
                self._slots.release()
                raise RuntimeError("cannot schedule new futures after shutdown")
            tid = next(self._ids)
            # A Future takes attributes; its task id lets cancel_futures() find the task.
            future.distproc_task_id = tid  # type: ignore[attr-defined]  # set on purpose, see above
            self._futures[tid] = future
            self._outbox.append(TaskSpec(tid, ref or PICKLED_CALLABLE, payload, options))
            if self._flushing:
                return future
            self._flushing = True
        self._channel.kick()
        return future

    # ------------------------------------------- the channel's MasterEnd side
    def take_outbox(self) -> list[TaskSpec]:
        with self._lock:
            batch, self._outbox = self._outbox, []
            self._flushing = False
        return batch

    def on_failed(self, specs: list[TaskSpec], exc: BaseException) -> None:
        self._fail([spec.id for spec in specs], exc)

    def on_broken(self, exc: BaseException) -> None:
        with self._lock:
            self._broken = exc
            tids = list(self._futures)
        log.error("%s", exc)
        self._fail(tids, exc)

    def _workers_refused(self, reason: str) -> None:
        """The local workers cannot start, and restarting them would not help: fail for good."""
        self.on_broken(StartError(f"the Executor's local workers cannot start: {reason}"))

    def finished(self) -> bool:
        with self._lock:
            return self._shutdown and not self._futures

    def _fail(self, tids: list[int], exc: BaseException) -> None:
        with self._lock:
            futures = [f for f in map(self._futures.pop, tids, [None] * len(tids)) if f]
        for future in futures:
            self._slots.release()
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                future.set_exception(exc)

    # -------------------------------------------------------------- results
    def on_outcomes(self, outcomes: list[Outcome]) -> None:
        with self._lock:
            pop = self._futures.pop
            found = [(pop(o.task, None), o.status, o.payload) for o in outcomes]
        release = self._slots.release
        for future, status, payload in found:
            if future is None:
                continue
            release()
            try:
                if status == OK:
                    future.set_result(decode(payload, self._allow_pickle))
                else:
                    future.set_exception(self._error(status, payload))
            except concurrent.futures.InvalidStateError:
                pass  # cancelled here after it was sent
            except Exception as exc:  # a result this side cannot (or will not) decode
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    future.set_exception(exc)

    def _error(self, status: str, payload: Any) -> BaseException:
        if status == LOST:
            attempts = [(str(a), str(b)) for a, b in payload.get("attempts", [])]
            return WorkerLostError(f"task lost: {payload.get('reason', '?')}", attempts)
        if status == UNAVAILABLE:
            workers = [(str(a), str(b)) for a, b in payload.get("workers", [])]
            return TaskImportError(str(payload.get("reason", "?")), workers)
        record = decode(payload, False)
        if status == TIMEOUT:
            return TaskTimeoutError(str(record.get("message", "the task ran past its timeout")))
        if status == ERROR:
            return rebuild_error(record)
        return RuntimeError(f"unknown task status {status!r}")

    # -------------------------------------------------------------------- map
    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: bool | None = None,
        total: int | None = None,
        return_exceptions: bool = False,
    ) -> Iterator[Any]:
        """Like :meth:`concurrent.futures.Executor.map`, fed lazily with backpressure.

        ``chunksize``: calls per task; ``None`` (the default) sizes chunks
        from measured call times (see :mod:`distproc.tasks.mapping`).
        ``progress`` draws a bar on stderr (default: the Executor's setting,
        else when stderr is a terminal); ``total`` is its length when the
        input has no ``len()``.  With ``return_exceptions`` a call that raised
        yields its exception instead of raising it.
        """
        if total is None and len(iterables) == 1:
            with contextlib.suppress(TypeError):
                total = len(iterables[0])  # type: ignore[arg-type]  # TypeError if not Sized
        calls = zip(*iterables, strict=False)  # the shortest input ends the map, as the stdlib's
        return self.starmap(fn, calls, timeout=timeout, chunksize=chunksize, progress=progress,
                            total=total, return_exceptions=return_exceptions)  # fmt: skip

    def starmap(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        *,
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: bool | None = None,
        total: int | None = None,
        return_exceptions: bool = False,
    ) -> Iterator[Any]:
        """``fn(*args)`` for each ``args`` of ``iterable``, in order; see :meth:`map`."""
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        ref = self._ref(fn)
        if chunksize is None and (not ref or "timeout" in self._opts or "retry_on" in self._opts):
            chunksize = 1  # per-call timeouts and retries need a task per call
        if chunksize is not None and chunksize > 1 and not ref:
            raise TypeError("chunksize > 1 needs an importable function")
        run = MapRun(self, fn, ref, iterable, timeout=timeout, chunksize=chunksize,
                     bar=self._bar(progress, total), total=total,
                     return_exceptions=return_exceptions)  # fmt: skip
        return self._on_dashboard(iter(run), ref or repr(fn), total)

    def map_lines(
        self,
        fn: Callable[..., Any],
        stream: IO[bytes],
        *,
        star: bool = False,
        records: bool = False,
        read_ahead: int = READ_AHEAD,
        block_lines: int | None = None,
        progress: bool | None = None,
        total: int | None = None,
        offset: int = 0,
        first_line: int = 1,
        hasher: Any = None,
    ) -> Iterator[LinesOut]:
        """``fn`` on each JSON line of ``stream``: its JSON output lines, in order, in blocks.

        What ``distproc map`` runs (see :mod:`distproc.tasks.blockmap`): each
        item holds the output lines of consecutive input lines, a result or
        an error record for each non-blank one, the number of error records,
        and the input offset after them.  ``star`` spreads each line's array
        as the arguments; ``records`` writes ``{"result": VALUE}``.
        ``read_ahead`` bounds the input bytes in flight; ``block_lines``
        fixes the lines per task.  ``offset`` and ``first_line`` say where
        in the input ``stream`` starts, for a resumed run; ``hasher`` (a
        :mod:`hashlib` object) is updated with the input's bytes, and the
        last item of each block carries a copy (``LinesOut.checkpoint``).
        """
        if block_lines is not None and block_lines < 1:
            raise ValueError("block_lines must be >= 1")
        ref = self._ref(fn)
        if not ref:
            raise TypeError("map_lines needs an importable function")
        reader = BlockReader(stream, max_line=self.max_task_bytes - ENVELOPE_OF_BLOCK,
                             offset=offset, first_line=first_line, hasher=hasher)  # fmt: skip
        left = input_size(stream)
        run = BlockRun(self, ref, reader, star=star, records=records, read_ahead=read_ahead,
                       block_lines=block_lines, input_end=None if left is None else offset + left,
                       bar=self._bar(progress, total))  # fmt: skip
        return self._on_dashboard(iter(run), ref, total, lambda out: out.data.count(b"\n"))

    def _on_dashboard(
        self,
        results: Iterator[_T],
        function: str,
        total: int | None,
        weight: Callable[[_T], int] | None = None,
    ) -> Iterator[_T]:
        """``results``; with a dashboard, the run is in the status report while it runs."""
        host = self._host
        if host is None or self.dashboard_url is None:
            return results
        services = host.server.services  # read on the loop: changed there

        def gone(status: MapStatus) -> None:
            with contextlib.suppress(RuntimeError):  # the service has stopped: nothing to do
                host.call_soon(services.remove, status)

        shown = functools.partial(host.call_soon, services.append)
        return MapStatus(function, total).count(results, shown, gone, weight)

    def _bar(self, progress: bool | None, total: int | None) -> ProgressBar | None:
        show = self._progress if progress is None else progress
        if show is None:
            show = sys.stderr.isatty()
        if not show:
            return None
        from .progress import ProgressBar  # rich is imported only to draw a bar

        return ProgressBar(total, self._count_workers)

    # ------------------------------------------------------------- status
    def _count_workers(self) -> int | None:
        return self._channel.worker_count()

    def status(self) -> dict[str, Any]:
        """The task service's status (see ``distproc status``)."""
        return self._channel.status()

    # ----------------------------------------------------------- shutdown
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            pending = dict(self._futures)
        if cancel_futures:
            self._cancel_unstarted(pending)
        if wait:
            concurrent.futures.wait([f for f in pending.values() if not f.cancelled()])
        if self._host is not None and self._host.service is not None:
            with contextlib.suppress(Exception):
                self._host.run(setattr, self._host.service, "closing", True)
        if self._fleet is not None:
            if not wait:
                self._fleet.kill()
            else:
                self._fleet.stop()
        self._channel.close()
        if self._host is not None:
            self._host.stop()
        with self._lock:
            left = list(self._futures)
        self._fail(left, concurrent.futures.CancelledError())

    def _cancel_unstarted(self, pending: dict[int, concurrent.futures.Future[Any]]) -> None:
        """``shutdown(cancel_futures=True)``: cancel the tasks that no worker has taken.

        Those a worker holds run to the end, as the stdlib's pool lets the
        calls it has handed to its processes finish.  Tasks on their way to
        the service get there first (the cancel follows them), so an idle
        worker may still take one.
        """
        for tid in self._cancel_remote(sorted(pending)):
            pending[tid].cancel()

    def cancel_futures(self, futures: Iterable[concurrent.futures.Future[Any]]) -> int:
        """Cancel these futures, and their tasks on the service where they have not started."""
        tids = [
            f.distproc_task_id for f in futures if f.cancel() and hasattr(f, "distproc_task_id")
        ]
        return len(self._cancel_remote(tids)) if tids else 0

    def _cancel_remote(self, tids: list[int]) -> list[int]:
        try:
            done = self._channel.cancel(tids)
        except Exception as exc:
            log.warning("could not cancel %d task(s) on the service: %s", len(tids), exc)
            return []
        with self._lock:
            for tid in done:  # no result will come for these
                if self._futures.pop(tid, None) is not None:
                    self._slots.release()
        return done
