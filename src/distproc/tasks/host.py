"""Hosting a task service: a distproc server with one :class:`TaskService` on its loop.

Workers and remote masters reach the service as the typeid ``TaskService``
over the native protocol (a server that hosts it refuses pickle on the wire:
payloads are bytes that the service never decodes).  An :class:`Executor`
that hosts the service runs the server on a thread of its own process and
talks to the service on the loop directly, without a connection.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..addresses import format_address
from ..errors import AuthenticationError, DistprocError, NoTaskServiceError, RemoteError
from ..managers import BaseManager
from ..server import Server, ServerConfig
from .backends import TaskBackend, open_backend
from .service import TaskService, check_options

if TYPE_CHECKING:
    from ..tls import TLSConfig

__all__ = [
    "SERVICE_METHODS",
    "ServiceHost",
    "ServiceManager",
    "close_service",
    "connect_service",
    "describe_refusal",
]

_T = TypeVar("_T")

SERVICE_METHODS = tuple(sorted(TaskService.__distproc_loop_methods__))


class ServiceManager(BaseManager):
    """The client side: ``ServiceManager(address, authkey, serializer='native').connect()``."""


ServiceManager.register("TaskService", exposed=SERVICE_METHODS)


#: Where a task service comes from, for messages that must say where to find one.
_SERVICES = "distproc map --address, distproc serve without MODULE:CLASS, or an Executor"


def connect_service(
    address: Any, authkey: bytes, tls: TLSConfig | None = None
) -> tuple[ServiceManager, Any]:
    """Connect to the task service at ``address``: its manager and a proxy of the service.

    A server that is not a task service raises :class:`NoTaskServiceError`
    with a message that says so.
    """
    where = format_address(address)
    manager = ServiceManager(tuple(address), authkey, serializer="native", tls=tls)
    try:
        manager.connect()
    except DistprocError as exc:
        if isinstance(exc, (AuthenticationError, OSError, EOFError)):
            raise
        # The one a stdlib multiprocessing.managers server gets: it speaks no native protocol.
        raise NoTaskServiceError(
            f"{where} is not a distproc task service (a multiprocessing.managers server?); "
            f"a task service is what {_SERVICES} hosts"
        ) from exc
    try:
        service = manager.TaskService()  # type: ignore[attr-defined]  # made by register()
    except RemoteError as exc:
        if "unknown typeid 'TaskService'" not in str(exc):
            raise
        raise NoTaskServiceError(
            f"{where} is a distproc manager with no task service; "
            f"a task service is what {_SERVICES} hosts"
        ) from None
    return manager, service


def close_service(manager: ServiceManager) -> None:
    """Close the connection that :func:`connect_service` opened (its proxies die with it)."""
    manager.close_connections()


def describe_refusal(address: Any, exc: BaseException) -> str:
    """What to tell a person whose worker or master ``address`` turned away."""
    where = format_address(address)
    if isinstance(exc, AuthenticationError):
        return (
            f"the task service at {where} refused the authkey: use the service's, "
            "from $DISTPROC_AUTHKEY or --authkey-file"
        )
    text = str(exc)
    if isinstance(exc, NoTaskServiceError) or where in text:
        return text  # it names the address already
    return f"{where}: {text}"


class ServiceHost:
    """A server whose registry holds the task service; start it on a thread or serve here.

    ``store``: ``None`` keeps the tasks in memory; a path keeps them in that
    SQLite file (``sync``: ``"full"`` or ``"normal"``), opened here, so a bad
    file is refused before anything listens.  ``tls``: serve mutual TLS only
    (``config.tls``, see :mod:`distproc.tls`).
    """

    def __init__(
        self,
        address: Any,
        authkey: bytes,
        *,
        max_attempts: int = 3,
        heartbeat_timeout: float = 10.0,
        config: ServerConfig | None = None,
        store: str | None = None,
        sync: str = "full",
        sock: socket.socket | None = None,
        tls: TLSConfig | None = None,
    ) -> None:
        if tls is not None:
            config = dataclasses.replace(config or ServerConfig(), tls=tls)
        check_options(max_attempts, heartbeat_timeout)  # here, not later on the loop
        self.backend: TaskBackend = open_backend(
            store, max_attempts=max_attempts, heartbeat_timeout=heartbeat_timeout, sync=sync
        )
        self.service: TaskService | None = None
        registry = {"TaskService": (self._get_service, SERVICE_METHODS, None, None)}
        try:
            self.server = Server(registry, address, authkey, "native", config=config, sock=sock)
        except BaseException:
            self.backend.close()
            raise
        self.server.on_start.append(self._create_service)
        self.address: tuple[str, int] = self.server.address
        self._thread: threading.Thread | None = None

    def _create_service(self) -> None:
        assert self.server.loop is not None
        self.service = TaskService(
            self.server.loop, self.backend, address=format_address(self.address)
        )
        self.server.services.append(self.service)  # shown by `distproc status` at once

    def _get_service(self) -> TaskService:
        assert self.service is not None
        return self.service

    def serve(self) -> None:
        """Serve on this thread until stopped (Ctrl-C, :meth:`stop`)."""
        try:
            self.server.serve()
        finally:
            if self.service is not None:
                self.service.close()
            else:
                self.backend.close()

    def start(self) -> None:
        """Serve on a daemon thread; return once the service is up."""
        self._thread = threading.Thread(target=self.serve, name="distproc-tasks", daemon=True)
        self._thread.start()
        self.server.started.wait()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop serving.  Workers and masters that are connected then are not lost:
        with a durable store they come back to the next service."""
        if self.server.loop is not None and self.service is not None:
            with contextlib.suppress(RuntimeError):  # the loop has stopped already
                self.call_soon(setattr, self.service, "closing", True)
        self.server.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the service's loop (from any thread)."""
        loop = self.server.loop
        assert loop is not None
        loop.call_soon_threadsafe(fn, *args)

    def run(self, fn: Callable[..., _T], *args: Any, timeout: float | None = 10.0) -> _T:
        """Run ``fn(*args)`` on the loop and return its result (from another thread)."""
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def job() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self.call_soon(job)
        return future.result(timeout)
