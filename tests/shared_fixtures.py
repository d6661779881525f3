"""What every test directory shares: servers to test against, waiting, the test authkey.

Loaded as a pytest plugin by ``tests/conftest.py``, so its fixtures are in
every test's reach; its helpers are imported as ``from shared_fixtures import ...``
(``tests/`` is on ``sys.path``, see ``pyproject.toml``).

* :data:`AUTHKEY`: the key of every server these fixtures start.
* :func:`wait_until`: poll a condition until a deadline (never a bare sleep).
* :func:`serve_in_thread` and the ``serve`` fixture: a distproc server on
  port 0 in a thread of the test process, started with a readiness event and
  stopped (and joined) at the end.
* The ``stdlib_manager`` fixture: a stdlib ``multiprocessing.managers``
  server in a process of its own (a stdlib server thread cannot be stopped:
  its accept loop spins once its socket is closed), shut down by the manager.
* The ``silent_listener``, ``http_408_server`` and ``closing_listener``
  fixtures: ports that are no manager server, for clients to meet.
"""

from __future__ import annotations

import contextlib
import http.server
import multiprocessing
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from distproc.managers import BaseManager
from distproc.server import Server

__all__ = [
    "AUTHKEY",
    "Address",
    "RunningServer",
    "ServeFn",
    "serve_in_thread",
    "start_serving",
    "wait_until",
]

#: The authkey of the servers that these fixtures start.
AUTHKEY = b"unit-test-key"

Address = tuple[str, int]


def wait_until(
    predicate: Callable[[], Any], what: str, *, timeout: float = 10.0, interval: float = 0.001
) -> None:
    """Poll ``predicate`` until it is true; fail, saying ``what`` was awaited, after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (waited {timeout}s)")
        time.sleep(interval)  # a poll interval, bounded by the deadline


@dataclass
class RunningServer:
    """A :class:`Server` whose ``serve()`` runs in a thread of the test process."""

    server: Server
    thread: threading.Thread

    @property
    def address(self) -> Address:
        host, port = self.server.address
        return (host, port)

    @property
    def authkey(self) -> bytes:
        return self.server.authkey

    def stop(self, timeout: float = 10.0) -> None:
        self.server.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the server thread did not stop"
        assert self.server.stopped.is_set()


def start_serving(server: Server, *, name: str = "test-server") -> threading.Thread:
    """Run ``server.serve()`` in a thread; return it once the server accepts connections."""
    thread = threading.Thread(target=server.serve, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started.wait(0.05) and thread.is_alive():
        if time.monotonic() > deadline:
            break
    if not server.started.is_set():
        RunningServer(server, thread).stop()
        raise RuntimeError("the server thread did not start")
    return thread


def serve_in_thread(server: Server, *, name: str = "test-server") -> RunningServer:
    """Run ``server.serve()`` in a thread (see :func:`start_serving`); stop it with ``.stop()``."""
    return RunningServer(server, start_serving(server, name=name))


#: The ``serve`` fixture: ``serve(ManagerClass, **kwargs)`` -> (server, connected
#: client manager); the client is typed ``Any``, for the methods ``register()`` adds.
ServeFn = Callable[..., tuple[Server, Any]]


@pytest.fixture
def serve() -> Iterator[ServeFn]:
    """Serve a manager class in a thread; return its server and a connected client manager."""
    running: list[RunningServer] = []

    def start(cls: type[BaseManager], **kwargs: Any) -> tuple[Server, Any]:
        server = cls(address=("127.0.0.1", 0), authkey=AUTHKEY, **kwargs).get_server()
        running.append(serve_in_thread(server))
        client = cls(address=server.address, authkey=AUTHKEY)
        client.connect()
        return server, client

    yield start
    for srv in running:
        srv.stop()


@pytest.fixture
def stdlib_manager() -> Iterator[Callable[..., Any]]:
    """``stdlib_manager(cls, address=("127.0.0.1", 0))``: a started stdlib manager of
    ``cls`` (a subclass of ``multiprocessing.managers.BaseManager``, or of
    distproc's), with :data:`AUTHKEY`; shut down at the end of the test."""
    started: list[Any] = []

    def start(cls: type[Any], address: Address = ("127.0.0.1", 0)) -> Any:
        # fork: the test module that defines ``cls`` need not be importable by name.
        fork = multiprocessing.get_context("fork")
        manager = cls(address=address, authkey=AUTHKEY, ctx=fork)
        manager.start()
        started.append(manager)
        return manager

    yield start
    for manager in started:
        manager.shutdown()


@contextlib.contextmanager
def _accepting(handle: Callable[[socket.socket], None]) -> Iterator[Address]:
    """A listener on 127.0.0.1 whose accepted connections go to ``handle`` (on a thread)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener is closed: the test is over
            accepted.append(conn)
            handle(conn)

    thread = threading.Thread(target=accept, name="test-listener", daemon=True)
    thread.start()
    try:
        host, port = listener.getsockname()[:2]
        yield (host, port)
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
        listener.close()
        thread.join(10)
        for conn in accepted:
            conn.close()


@pytest.fixture
def silent_listener() -> Iterator[Address]:
    """A port that accepts connections and never sends a byte."""
    with _accepting(lambda conn: None) as address:
        yield address


@pytest.fixture
def closing_listener() -> Iterator[Address]:
    """A port that accepts connections and closes them at once."""
    with _accepting(lambda conn: conn.shutdown(socket.SHUT_RDWR)) as address:
        yield address


class _Http408Handler(http.server.BaseHTTPRequestHandler):
    """http.server with a request timeout that answers ``408``, as nginx and Apache do."""

    timeout = 0.2  # seconds to send a request line

    def handle_one_request(self) -> None:
        try:
            line = self.rfile.readline(65537)
        except TimeoutError:
            self.wfile.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n")
            self.close_connection = True
            return
        if not line:
            self.close_connection = True
            return
        self.raw_requestline = line
        if self.parse_request():
            self.send_error(404)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # nothing on the test's stderr


@pytest.fixture
def http_408_server() -> Iterator[Address]:
    """A real HTTP server (``http.server``, in a thread) that speaks when a client
    says nothing: ``HTTP/1.1 408 Request Timeout`` after 0.2 s."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Http408Handler)
    thread = threading.Thread(
        target=httpd.serve_forever, args=(0.05,), name="test-http", daemon=True
    )  # a short poll interval: shutdown() waits for it
    thread.start()
    try:
        host, port = httpd.server_address[:2]
        yield (str(host), int(port))
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
