"""Fixtures: real servers on port 0, run in a thread with a readiness event."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from distproc.managers import BaseManager
from distproc.server import Server

AUTHKEY = b"unit-test-key"


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[Server, BaseManager]]]:
    """Serve a manager class in a thread; return its server and a connected client manager."""
    running: list[tuple[Server, threading.Thread]] = []

    def start(cls: type[BaseManager], **kwargs: object) -> tuple[Server, BaseManager]:
        server = cls(address=("127.0.0.1", 0), authkey=AUTHKEY, **kwargs).get_server()  # type: ignore[arg-type]
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        assert server.started.wait(10)
        running.append((server, thread))
        client = cls(address=server.address, authkey=AUTHKEY)
        client.connect()
        return server, client

    yield start
    for server, thread in running:
        server.stop()
        thread.join(10)
        assert not thread.is_alive()
