"""Clients that die or are interrupted in ``queue.get()``, and servers that stop under them.

The server runs in a thread of the test process; the doomed clients are real
subprocesses (``_child_client.py``) that are killed with SIGKILL or
interrupted with SIGINT while the server holds their ``get()``.  The item
put afterwards must reach a live consumer: the stdlib's server would have
handed it to the dead client's thread and lost it.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
from shared_fixtures import wait_until

from distproc.client.connection import Client, dispatch
from distproc.errors import ConnectionLostError

from ._objects import waiting_getters
from ._support import ChildFactory, QueueServer
from ._wire import open_channel, round_trip, server_call

PROMPT = 2.0


def _shared_queue_ident(server: QueueServer) -> str:
    ident, _ = server_call(server.address, server.authkey, "create", ("get_queue",))
    assert isinstance(ident, str)
    return ident


def _assert_live_consumer_gets_next_item(server: QueueServer, ident: str) -> None:
    """No getter is left in line; a live consumer's ``get()`` receives the next put."""
    q = server.shared_queue
    wait_until(
        lambda: waiting_getters(q) == 0,
        "the server still holds the dead client's get()",
        timeout=5.0,
    )
    with open_channel(server.address, server.authkey, name="consumer") as consumer:
        consumer.send_request(ident, "get")
        wait_until(
            lambda: waiting_getters(q) == 1,
            "the consumer's get() is not waiting",
            timeout=5.0,
        )
        with open_channel(server.address, server.authkey, name="producer") as producer:
            producer.call(ident, "put", ("item-1",))
        consumer.timeout = PROMPT
        assert consumer.recv_reply() == ("#RETURN", "item-1")
        assert consumer.call(ident, "qsize") == 0


@pytest.mark.parametrize("mode", ["raw-get", "proxy-get"])
def test_client_killed_while_blocked_in_get(
    server: QueueServer, spawn_child: ChildFactory, mode: str
) -> None:
    ident = _shared_queue_ident(server)
    child = spawn_child(mode, server.address, server.authkey, ident)
    if mode == "proxy-get":
        assert child.expect("QSIZE") == "QSIZE 0"
    child.expect("READY")
    wait_until(
        lambda: waiting_getters(server.shared_queue) == 1,
        "the child's get() never reached the server",
        timeout=5.0,
    )
    child.proc.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    _assert_live_consumer_gets_next_item(server, ident)
    round_trip(server.address, server.authkey)
    server_call(server.address, server.authkey, "decref", (ident,))


def test_two_clients_killed_in_line_before_a_live_one(
    server: QueueServer, spawn_child: ChildFactory
) -> None:
    ident = _shared_queue_ident(server)
    children = []
    for _ in range(2):
        child = spawn_child("raw-get", server.address, server.authkey, ident)
        child.expect("READY")
        children.append(child)
        wait_until(
            lambda: waiting_getters(server.shared_queue) == len(children),
            "no get()",
            timeout=5.0,
        )
    with open_channel(server.address, server.authkey, name="consumer") as consumer:
        consumer.send_request(ident, "get")
        wait_until(lambda: waiting_getters(server.shared_queue) == 3, "no live get()", timeout=5.0)
        for child in children:
            child.proc.kill()
            child.wait()
        wait_until(
            lambda: waiting_getters(server.shared_queue) == 1,
            "dead get()s kept",
            timeout=5.0,
        )
        with open_channel(server.address, server.authkey, name="producer") as producer:
            producer.call(ident, "put", ("for-the-living",))
        consumer.timeout = PROMPT
        assert consumer.recv_reply() == ("#RETURN", "for-the-living")
    round_trip(server.address, server.authkey)


def test_client_interrupted_in_get_by_sigint(
    server: QueueServer, spawn_child: ChildFactory
) -> None:
    ident = _shared_queue_ident(server)
    child = spawn_child("proxy-sigint", server.address, server.authkey)
    assert child.expect("QSIZE") == "QSIZE 0"
    child.expect("READY")
    wait_until(
        lambda: waiting_getters(server.shared_queue) == 1,
        "the child's get() never reached the server",
        timeout=5.0,
    )
    child.proc.send_signal(signal.SIGINT)
    child.expect("INTERRUPTED")
    # The interrupted get() is cancelled: the next item goes to a live consumer.
    _assert_live_consumer_gets_next_item(server, ident)
    # A second item stays in the queue; the child's next calls on the same proxy
    # must see it, not the stale reply of the interrupted get().
    with open_channel(server.address, server.authkey, name="producer") as producer:
        producer.call(ident, "put", ("item-2",))
    child.send_line("GO")
    assert child.expect("QSIZE") == "QSIZE 1"
    assert child.expect("ITEM") == "ITEM 'item-2'"
    assert child.wait() == 0
    round_trip(server.address, server.authkey)
    server_call(server.address, server.authkey, "decref", (ident,))


# ------------------------------------------------------- the server goes away
class _BlockedGetter:
    """A thread of this process blocked in ``get()`` through distproc's client."""

    def __init__(self, server: QueueServer, ident: str) -> None:
        self.error: BaseException | None = None
        self.result: object = None
        self.done = threading.Event()
        self.conn = Client(server.address, server.authkey, timeout=5.0)
        dispatch(self.conn, None, "accept_connection", ("blocked-getter",))
        self.thread = threading.Thread(target=self._run, args=(ident,), daemon=True)
        self.thread.start()

    def _run(self, ident: str) -> None:
        try:
            self.result = dispatch(self.conn, ident, "get")
        except BaseException as exc:
            self.error = exc
        finally:
            self.conn.close()
            self.done.set()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "a client blocked in get() hangs"


@pytest.mark.parametrize("how", ["server.stop()", "shutdown request"])
def test_server_stops_while_clients_wait_in_get(server: QueueServer, how: str) -> None:
    ident = _shared_queue_ident(server)
    getters = [_BlockedGetter(server, ident) for _ in range(3)]
    try:
        wait_until(
            lambda: waiting_getters(server.shared_queue) == 3,
            "getters not waiting",
            timeout=5.0,
        )
        start = time.monotonic()
        if how == "server.stop()":
            server.server.stop()
        else:
            with Client(server.address, server.authkey, timeout=5.0) as conn:
                assert dispatch(conn, None, "shutdown") is None
        for g in getters:
            assert g.done.wait(PROMPT), "a client blocked in get() was not told"
        elapsed = time.monotonic() - start
    finally:
        server.server.stop()
        for g in getters:
            g.join(10.0)
    assert elapsed < PROMPT
    for g in getters:
        assert isinstance(g.error, ConnectionLostError), repr(g.error)
        assert isinstance(g.error, ConnectionError) and isinstance(g.error, EOFError)
    server.thread.join(10.0)
    assert not server.thread.is_alive(), "serve() did not return"
    assert waiting_getters(server.shared_queue) == 0
