"""Native-protocol faults that lost or leaked (issue 18, section 3), sent for real.

Each test sends what a broken or hostile native peer sent, and checks that
nothing is lost or kept for it, that the others are served, and, where the
fault is the peer's alone, that its own connection stays usable.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from shared_fixtures import AUTHKEY, ServeFn, serve_in_thread, wait_until

from distproc.client.mux_cache import close_multiplexers
from distproc.managers import BaseManager
from distproc.server import Server, ServerConfig

from ._native_wire import NativeWire, call_record, cancel_record
from ._support import QueueServer
from ._wire import round_trip, server_call


class QM(BaseManager):
    pass


QM.register("Queue", queue.Queue)


# ------------------------------------------------------------ session ids
@pytest.mark.parametrize("second", ["native", "localhost"])
def test_two_connections_of_one_process_keep_their_own_references(
    serve: ServeFn, second: str
) -> None:
    """A ``pickle`` and a ``native`` manager of one process (or one to
    ``127.0.0.1`` and one to ``localhost``) drop within ``reconnect_grace``: each
    reconnects to its own objects, and once the proxies go, nothing is left."""
    server, first = serve(QM)
    host, port = server.address
    if second == "native":
        other: Any = QM(address=(host, port), authkey=AUTHKEY, serializer="native")
    else:
        other = QM(address=("localhost", port), authkey=AUTHKEY)
    other.connect()
    a: Any = first.Queue()
    b: Any = other.Queue()
    a.put("a")
    b.put("b")
    assert len(server.table) == 2
    close_multiplexers()  # both connections drop, as a network error would
    assert a.get(timeout=5) == "a"  # each reconnects and finds its own queue
    assert b.get(timeout=5) == "b"
    del a, b
    wait_until(lambda: len(server.table) == 0, "references were left behind")
    c: Any = other.Queue()  # and the server still serves the second manager
    c.put(1)
    assert c.qsize() == 1


def test_a_proxy_of_a_restarted_server_releases_nothing_on_the_new_one() -> None:
    """The server restarts on its port (ids start again at 1) and the process
    reconnects: a proxy from before that goes away must not release the new
    object that now has its id (it did: the new queue vanished under its proxy)."""
    first = QM(address=("127.0.0.1", 0), authkey=AUTHKEY).get_server()
    running = serve_in_thread(first)
    address = first.address
    client: Any = QM(address=address, authkey=AUTHKEY, serializer="native")
    client.connect()
    old: Any = client.Queue()
    old.put("old")
    running.stop()
    second = QM(address=address, authkey=AUTHKEY).get_server()
    running = serve_in_thread(second)
    try:
        client = QM(address=address, authkey=AUTHKEY, serializer="native")
        client.connect()
        new: Any = client.Queue()
        assert new._token.id == old._token.id  # the case: one id, two objects
        new.put("new")
        del old  # its decref goes nowhere: the server that held it is gone
        assert new.get(timeout=5) == "new"
        new.put("again")
        assert new.qsize() == 1 and len(second.table) == 1
    finally:
        close_multiplexers()
        running.stop()


# ------------------------------------------- replies that cannot be delivered
#: Weak references to the objects that ``Slow`` made, and what they wait for.
_made: list[weakref.ref[Any]] = []
_release = threading.Event()


class Slow:
    """A shared object whose constructor waits for the test (it runs on a thread)."""

    def __init__(self) -> None:
        _made.append(weakref.ref(self))
        _release.wait(30)

    def ping(self) -> str:
        return "pong"


@pytest.fixture
def slow_server() -> Iterator[Server]:
    _made.clear()
    _release.clear()
    registry = {
        "Slow": (Slow, None, None, None),
        "get_queue": (lambda: shared, None, None, None),
    }
    shared: queue.Queue[Any] = queue.Queue()
    server = Server(registry, ("127.0.0.1", 0), AUTHKEY, "pickle", config=ServerConfig())
    running = serve_in_thread(server)
    yield server
    _release.set()
    running.stop()


def _made_and_freed() -> bool:
    return bool(_made) and _made[0]() is None


def test_a_create_whose_call_is_cancelled_leaves_nothing(slow_server: Server) -> None:
    with NativeWire(slow_server.address, AUTHKEY) as peer:
        peer.send_records(call_record(5, peer.encode(None, "create", ("Slow",))), cancel_record(5))
        wait_until(lambda: _made, "the create never ran")
        _release.set()
        wait_until(_made_and_freed, "the cancelled create's object was kept")
        assert peer.call(None, "number_of_objects") == 0  # the connection goes on


def test_a_create_whose_request_id_is_reused_leaves_nothing(slow_server: Server) -> None:
    """A request id in flight sent again is a protocol error: the connection is
    dropped, and the object made for the first call is released."""
    with NativeWire(slow_server.address, AUTHKEY) as peer:
        create = peer.encode(None, "create", ("Slow",))
        peer.send_records(call_record(5, create))
        wait_until(lambda: _made, "the create never ran")
        peer.send_records(call_record(5, peer.encode(None, "number_of_objects")))
        peer.wait_closed(5.0)
    _release.set()
    wait_until(_made_and_freed, "the first create's object was kept")
    round_trip_native(slow_server)


def round_trip_native(server: Server) -> None:
    with NativeWire(server.address, AUTHKEY) as good:
        assert good.call(None, "number_of_objects") == 0


# ------------------------------------------------ a request id used twice at once
def test_a_reused_request_id_loses_no_queue_item(server: QueueServer) -> None:
    """Two blocking ``get()``s with one request id, then two ``put``s from another
    client: the reusing connection is dropped, and both items stay on the queue."""
    ident, _ = server_call(server.address, AUTHKEY, "create", ("get_queue",))
    with NativeWire(server.address, AUTHKEY) as peer:
        get = peer.encode(ident, "get")
        peer.send_records(call_record(9, get), call_record(9, get))
        peer.wait_closed(5.0)
    with NativeWire(server.address, AUTHKEY) as producer:
        producer.call(ident, "put", ("one",))
        producer.call(ident, "put", ("two",))
        assert producer.call(ident, "get") == "one"
        assert producer.call(ident, "get") == "two"
    round_trip(server.address, AUTHKEY)


# ------------------------------------------------------- records of the wrong shape
def test_deeply_nested_tags_are_a_protocol_error_not_a_recursion(server: QueueServer) -> None:
    """1,000 nested arrays around a map whose key is a tag (1,018 bytes): the
    call fails with a ``ProtocolError``, the connection goes on."""
    ident, _ = server_call(server.address, AUTHKEY, "create", ("Queue",))
    with NativeWire(server.address, AUTHKEY) as peer:
        nested = b"\x91" * 1000 + b"\x81\xc7\x00\x64\x01"  # [[[...{tag: 1}...]]]
        blob = b"\x94" + peer.codec.dumps(ident) + peer.codec.dumps("put") + nested + b"\x80"
        assert len(blob) < 1100
        peer.send_records(call_record(3, blob))
        kind, text = peer.replies(1)[3]
        assert kind == "#TRACEBACK" and "ProtocolError" in text and "Recursion" not in text
        assert peer.call(ident, "qsize") == 0


@pytest.mark.parametrize(
    "ident", [[1, 2], {"a": 1}, 7, b"1"], ids=["list", "dict", "int", "bytes"]
)
def test_an_object_id_of_the_wrong_type_fails_only_its_call(
    server: QueueServer, ident: Any
) -> None:
    """A ``get``/``put`` whose object id is a list or a dict (unhashable) or any
    non-str: that call fails, and the shared connection goes on."""
    good, _ = server_call(server.address, AUTHKEY, "create", ("Queue",))
    with NativeWire(server.address, AUTHKEY) as peer:
        for rid, method in ((1, "get"), (2, "put")):
            peer.send_call(rid, ident, method, ("x",) if method == "put" else ())
            kind, text = peer.replies(1)[rid]
            assert kind == "#TRACEBACK" and "object id must be a str" in text, text
        assert peer.call(good, "qsize") == 0
