"""Fixtures of the fault tests: servers in threads, client subprocesses, fd limits."""

from __future__ import annotations

import gc
import queue
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hub import Hub
from shared_fixtures import AUTHKEY, Address

from distproc.server import Server, ServerConfig

from ._objects import make_registry
from ._procs import Proc
from ._support import (
    CHILD_SCRIPT,
    Child,
    ChildFactory,
    QueueServer,
    ServerFactory,
    start_server_thread,
)


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect garbage after each test, so a leaked socket fails the test that leaked it.

    (An unclosed socket's ResourceWarning is an error under ``filterwarnings``,
    but it fires only when the socket is collected, maybe tests later.)
    """
    yield
    gc.collect()


@pytest.fixture
def server_factory() -> Iterator[ServerFactory]:
    """``make(config=None, authkey=AUTHKEY)`` starts a server; all are stopped at teardown."""
    running: list[QueueServer] = []

    def make(config: ServerConfig | None = None, *, authkey: bytes = AUTHKEY) -> QueueServer:
        shared: queue.Queue[Any] = queue.Queue()
        server = Server(
            make_registry(shared),
            ("127.0.0.1", 0),
            authkey,
            "pickle",
            config=config or ServerConfig(handshake_timeout=10.0),
        )
        srv = start_server_thread(server, shared)
        running.append(srv)
        return srv

    yield make
    for srv in running:
        srv.stop()


@pytest.fixture
def server(server_factory: ServerFactory) -> QueueServer:
    return server_factory()


@pytest.fixture
def many_fds() -> Iterator[int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit for the test; yield the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield wanted
    finally:
        if wanted > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def spawn_child() -> Iterator[ChildFactory]:
    """``spawn(mode, address, authkey, *extra)`` runs ``_child_client.py``; killed at teardown."""
    children: list[Child] = []

    def spawn(mode: str, address: Address, authkey: bytes, *extra: str) -> Child:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(CHILD_SCRIPT),
                mode,
                address[0],
                str(address[1]),
                authkey.hex(),
                *extra,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        child = Child(proc)
        children.append(child)
        return child

    yield spawn
    for child in children:
        child.close()


@pytest.fixture
def hub() -> Iterator[Hub]:
    """Tasks of :func:`dp_taskfns.hold` report to it and wait for its release."""
    with Hub() as running:
        yield running


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    """``procs(*args, **options)`` starts a :class:`Proc`; all are stopped at teardown."""
    started: list[Proc] = []

    def start(*args: str, **options: Any) -> Proc:
        proc = Proc(*args, **options)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
