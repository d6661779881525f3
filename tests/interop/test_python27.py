"""Python 2.7 stdlib peers and distproc, both ways: the pickle protocol each one
reads, and what becomes of Python 2 strings.

A Python 2.7 client (``peers/python2/client.py``) of a distproc server, and a
distproc client of a Python 2.7 stdlib server (``peers/python2/server.py``),
with the real interpreter (skipped when absent).  A Python 2 ``str`` arrives
as a ``str`` of one character per byte (latin-1), a ``unicode`` as a
``str``; a ``str`` reaches Python 2 as ``unicode`` and ``bytes`` as ``str``.
The server's side of it, answering each client in the protocol it writes,
is also tested without Python 2.
"""

from __future__ import annotations

import datetime
import queue
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shared_fixtures import AUTHKEY, ServeFn

from distproc.client.connect import connect
from distproc.client.connection import Client, Connection, dispatch
from distproc.managers import SyncManager
from distproc.wire.codecs import older_pickle_codec, pickle_protocol

from .harness import INTEROP_DIR, ServerProcess, python27, run_json_program

PYTHON27 = python27()
needs_python27 = pytest.mark.skipif(not PYTHON27.exists(), reason=f"{PYTHON27} is not installed")
PROGRAMS = INTEROP_DIR / "peers" / "python2"
WHEN = datetime.datetime(2018, 4, 8, 1, 42, 14)


def queue_manager(inbox: queue.Queue[Any], outbox: queue.Queue[Any]) -> type[SyncManager]:
    """A SyncManager with two more queues, as the Python 2 programs have."""

    class QueueManager(SyncManager):
        pass

    QueueManager.register("get_inbox", callable=lambda: inbox)
    QueueManager.register("get_outbox", callable=lambda: outbox)
    return QueueManager


@needs_python27
@pytest.mark.slow
def test_a_python27_client_of_a_distproc_server(serve: ServeFn) -> None:
    inbox: queue.Queue[Any] = queue.Queue()
    outbox: queue.Queue[Any] = queue.Queue()
    server, _ = serve(queue_manager(inbox, outbox))
    for value in (b"\xff\x00", "\u4e2d", ("t", 1)):
        outbox.put(value)
    client = [str(PYTHON27), str(PROGRAMS / "client.py"), str(server.address[1]), AUTHKEY.hex()]
    assert run_json_program(client) == [
        ["str", "'\\xff\\x00'"],
        ["unicode", "u'\\u4e2d'"],
        ["tuple", "(u't', 1)"],
        "Queue.Empty",
        1,  # a dict proxy read through a list proxy
        2,
        3,
    ]
    received = [inbox.get_nowait() for _ in range(inbox.qsize())]
    assert received == [
        "text",
        "\xe4\xb8\xad",  # the UTF-8 bytes of a Python 2 str, one character each
        "\u4e2d",
        {"url": "http://example.org/", "n": 1},
        WHEN,
        bytearray(b"\x00\xff"),
    ]
    assert "\xe4\xb8\xad".encode("latin-1").decode("utf-8") == "\u4e2d"


@pytest.fixture
def python27_server(tmp_path: Path) -> Iterator[ServerProcess]:
    key = secrets.token_bytes(16)
    server = ServerProcess.start(
        "python2.7 server",
        [str(PYTHON27), str(PROGRAMS / "server.py"), key.hex()],
        tmp_path / "server.stderr",
        key,
        "pickle",
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@needs_python27
@pytest.mark.slow
def test_a_distproc_client_of_a_python27_server(python27_server: ServerProcess) -> None:
    manager = queue_manager(queue.Queue(), queue.Queue())(
        address=python27_server.address, authkey=python27_server.authkey
    )
    manager.connect()
    outbox: Any = manager.get_outbox()  # type: ignore[attr-defined]
    assert [outbox.get(timeout=10) for _ in range(3)] == ["text", "\xe4\xb8\xad", "\u4e2d"]
    with pytest.raises(queue.Empty):
        outbox.get(timeout=0.01)
    inbox: Any = manager.get_inbox()  # type: ignore[attr-defined]
    for value in ("\u4e2d", b"\xff", {"k": [1, 2.5]}, WHEN):
        inbox.put(value)
    # Through Python 2 and back: bytes were a Python 2 str, so they come back as text.
    assert [inbox.get(timeout=10) for _ in range(4)] == ["\u4e2d", "\xff", {"k": [1, 2.5]}, WHEN]
    assert manager._number_of_objects() == 2
    inner = manager.dict()
    inner["a"] = 1
    outer = manager.list([inner])
    assert outer[0]["a"] == 1
    assert manager.Namespace(x=2).x == 2
    assert manager.Value("i", 3).value == 3


@needs_python27
@pytest.mark.slow
def test_the_request_a_python27_server_could_not_read_runs_once(
    python27_server: ServerProcess,
) -> None:
    """The first request is sent again in protocol 2; the server runs it once."""
    with Client(python27_server.address, authkey=python27_server.authkey) as conn:
        ident, exposed = dispatch(conn, None, "create", ("get_inbox",))
        assert isinstance(ident, str)
        assert "put" in exposed
    with Client(python27_server.address, authkey=python27_server.authkey) as conn:
        assert pickle_protocol(conn.codec.dumps(None)) == 2  # known from the start now
        assert dispatch(conn, None, "number_of_objects") == 1


@pytest.mark.parametrize("protocol", [0, 2, 3])
def test_a_server_answers_in_the_protocol_of_the_first_request(
    serve: ServeFn, protocol: int
) -> None:
    """Server methods and object calls alike, on every connection of that client."""
    server, client = serve(queue_manager(queue.Queue(), queue.Queue()))
    outbox = client.get_outbox()
    outbox.put("\u4e2d")

    def connection() -> Connection:
        sock, _ = connect(server.address, AUTHKEY, flags=None)
        return Connection(sock, older_pickle_codec(protocol))

    def call(conn: Connection, ident: str | None, method: str, *args: Any) -> Any:
        conn.send((ident, method, args, {}))
        reply = conn.recv_bytes()
        assert pickle_protocol(reply) == protocol
        kind, result = conn.codec.loads(reply)
        assert kind == "#RETURN", result
        return result

    with connection() as conn:
        assert call(conn, None, "number_of_objects") == 1
    with connection() as conn:
        call(conn, None, "accept_connection", "python2")
        assert call(conn, outbox._id, "get") == "\u4e2d"
        assert call(conn, outbox._id, "qsize") == 0
