"""The native protocol between distproc peers, on real servers."""

from __future__ import annotations

import asyncio
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.managers import BaseManager as StdlibManager
from typing import Any

import pytest
from shared_fixtures import AUTHKEY, ServeFn, serve_in_thread

import distproc.aio
from distproc.client.connect import connect
from distproc.client.connection import Client, dispatch
from distproc.client.mux import PILE_LIMIT, Multiplexer
from distproc.client.mux_cache import close_multiplexers
from distproc.errors import DistprocError
from distproc.managers import BaseManager, SyncManager
from distproc.server import ServerConfig, native_session as server_native
from distproc.server.connection import ServerConnection
from distproc.server.native_session import NativeSession
from distproc.wire import handshake
from distproc.wire.codecs import PickleCodec
from distproc.wire.framing import FrameReader, encode_header
from distproc.wire.handshake import FLAG_PICKLE
from distproc.wire.records import BATCH_LIMIT, CALL, KINDS, REPLY, iter_records, record


class Unloadable:
    """Pickles fine, fails to unpickle (on the server)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _refuse, ()


def _refuse() -> None:
    raise ValueError("refuses to be unpickled")


class QM(BaseManager):
    pass


QM.register("Queue", queue.Queue)
QM.register("Bounded", lambda: queue.Queue(maxsize=2))
QM.register("Event", threading.Event)


class Refusing(queue.Queue):  # type: ignore[type-arg]  # get and put kept: served by the loop
    def _put(self, item: Any) -> None:
        if item == "refused":
            raise ValueError("refused by _put")
        super()._put(item)


QM.register("Refusing", Refusing)
QM.register("RefusingBounded", lambda: Refusing(maxsize=5))


def test_distproc_peers_upgrade(serve: ServeFn) -> None:
    server, client = serve(QM)
    q: Any = client.Queue()
    assert isinstance(q._native(), Multiplexer)
    assert q._defer == {"put", "put_many"}  # an unbounded queue served by the loop
    q.put(1)
    assert q.get() == 1
    assert [c.session is not None for c in server.connections] == [True]


def test_stdlib_protocol_still_served_to_legacy_clients(serve: ServeFn) -> None:
    server, client = serve(QM)
    q: Any = client.Queue()
    ident = q._id
    with Client(server.address, AUTHKEY) as conn:  # no marker: the stdlib protocol
        dispatch(conn, None, "accept_connection", ("legacy",))
        assert dispatch(conn, ident, "qsize") == 0


def test_one_connection_for_every_thread_and_proxy(serve: ServeFn) -> None:
    server, client = serve(QM)
    proxies: list[Any] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [client.Queue() for _ in range(3)]
        for q in mine:
            q.put("x")
            assert q.get() == "x"
        with lock:
            proxies.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(proxies) == 24
    assert len(server.connections) == 1


def test_calls_of_many_threads_are_in_flight_at_once(serve: ServeFn) -> None:
    _, client = serve(QM)
    q: Any = client.Queue()
    gate: Any = client.Event()
    got: list[Any] = []

    def getter() -> None:
        got.append(q.get(timeout=20))

    threads = [threading.Thread(target=getter) for _ in range(8)]
    for t in threads:
        t.start()
    waiter = threading.Thread(target=gate.wait, args=(20,))  # a blocking call on a pool thread
    waiter.start()
    # While 9 calls wait on the shared connection, this one goes straight through.
    q.put_many(list(range(8)))
    for t in threads:
        t.join(20)
    gate.set()
    waiter.join(20)
    assert sorted(got) == list(range(8))


def test_put_many_and_get_many(serve: ServeFn) -> None:
    _, client = serve(QM)
    q: Any = client.Queue()
    q.put_many(range(10))
    assert q.get_many(4) == [0, 1, 2, 3]
    assert q.get_many(100) == [4, 5, 6, 7, 8, 9]
    with pytest.raises(queue.Empty):
        q.get_many(5, timeout=0.05)
    with pytest.raises(ValueError):
        q.get_many(0)
    bounded: Any = client.Bounded()
    assert bounded._defer == frozenset()  # a bounded queue's put may block: never deferred
    done = threading.Event()

    def fill() -> None:
        bounded.put_many([1, 2, 3, 4, 5])  # waits for room twice
        done.set()

    t = threading.Thread(target=fill)
    t.start()
    taken: list[int] = []
    while len(taken) < 5:
        taken += bounded.get_many(5, timeout=10)
    t.join(10)
    assert done.is_set() and taken == [1, 2, 3, 4, 5]


def test_deferred_put_error_is_raised_by_the_next_call(serve: ServeFn) -> None:
    _, client = serve(QM)
    q: Any = client.Queue()
    assert q.put(Unloadable()) is None  # sent without waiting: no error yet
    other_thread_saw: list[BaseException | None] = []

    def other() -> None:
        try:
            q.qsize()
            other_thread_saw.append(None)
        except BaseException as exc:  # pragma: no cover - it would be a bug
            other_thread_saw.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert other_thread_saw == [None]  # another thread is not blamed
    with pytest.raises(Exception, match="refuses to be unpickled"):
        q.qsize()
    assert q.qsize() == 0  # raised once, and the connection is fine


def test_a_loop_of_failing_puts_learns_of_it(serve: ServeFn) -> None:
    """Puts alone never wait for a reply, so nothing would read their errors: the
    client reads them every few puts, and the loop stops at the first one raised
    (before, it went on without end, or hung once the server stopped reading a
    client that reads none of its replies)."""
    _, client = serve(QM)
    q: Any = client.Queue()
    q.qsize()  # connected
    outcome: list[Any] = []

    def produce() -> None:
        count = 20_000
        try:
            for _ in range(count):
                q.put(Unloadable())
            outcome.append(f"no error in {count} puts")
        except Exception as exc:
            outcome.append(exc)

    producer = threading.Thread(target=produce, daemon=True)  # if it hung: ends at teardown
    producer.start()
    producer.join(30)
    assert len(outcome) == 1, "the producer hung"
    assert isinstance(outcome[0], Exception), outcome[0]
    assert "refuses to be unpickled" in str(outcome[0])
    assert q.qsize() == 0  # the connection is fine


def test_creating_a_proxy_is_one_round_trip(
    serve: ServeFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = serve(QM)
    warm = client.Queue()  # warm up: connected (kept, so its decref is not counted)
    calls: list[str] = []
    original = NativeSession.call

    def counting(
        self: NativeSession, rid: int, tid: int, ident: Any, method: str, *rest: Any
    ) -> None:
        calls.append(method)
        original(self, rid, tid, ident, method, *rest)

    monkeypatch.setattr(NativeSession, "call", counting)
    q: Any = client.Queue()
    assert calls == ["create"]
    del q, warm


def test_nested_proxies_over_native(serve: ServeFn) -> None:
    server, m = serve(SyncManager)
    sm: Any = m
    outer = sm.list([sm.dict(a=1)])
    inner = outer[0]  # decoded by the leader thread: adopts a reference, no extra call
    assert inner["a"] == 1
    assert len(server.connections) == 1
    del inner, outer
    assert sm._number_of_objects() == 0


def test_references_survive_a_reconnect(serve: ServeFn) -> None:
    server, client = serve(QM)
    q: Any = client.Queue()
    q.put("kept")
    close_multiplexers(server.address)  # as a network error would
    assert q.get(timeout=5) == "kept"  # a new connection, same process: same objects
    assert len(server.table) == 1


def test_references_of_a_dead_process_are_released(serve: ServeFn) -> None:
    server, client = serve(QM)
    server.config.reconnect_grace = 0.0
    client.Queue()  # a temporary proxy: it decrefs at once
    q: Any = client.Queue()
    assert len(server.table) == 1
    # ... and this process "dies": its connection goes, its session never comes back.
    from distproc.client import mux_cache

    monkey_sessions = mux_cache._sessions
    mux_cache._sessions = (-1, {})  # a new process identity for the next connection
    try:
        close_multiplexers(server.address)
        assert client._number_of_objects() == 0  # released after the (zero) grace period
    finally:
        mux_cache._sessions = monkey_sessions
    del q


def _native_socket(address: Any) -> socket.socket:
    sock, agreement = connect(address, AUTHKEY, flags=FLAG_PICKLE, session_id=b"raw-session")
    flags = agreement.peer_flags
    assert flags is not None and flags & handshake.FLAG_PICKLE
    return sock


def test_a_batch_of_calls_in_one_frame(serve: ServeFn) -> None:
    server, client = serve(QM)
    q: Any = client.Queue()
    ident = q._id
    codec = PickleCodec()
    sock = _native_socket(server.address)
    try:
        parts: list[bytes] = []
        parts += record(CALL, 1, 7, 0, codec.dumps((ident, "put", ("a",), {})))
        parts += record(CALL, 2, 7, 0, codec.dumps((ident, "put", ("b",), {})))
        parts += record(CALL, 3, 7, 0, codec.dumps((ident, "qsize", (), {})))
        parts += record(CALL, 4, 7, 0, codec.dumps((ident, "nope", (), {})))
        payload = b"".join(parts)
        sock.sendall(encode_header(len(payload)) + payload)
        reader = FrameReader()
        replies: dict[int, tuple[str, Any]] = {}
        frames = 0
        while len(replies) < 4:
            n = sock.recv_into(reader.get_buffer())
            assert n
            reader.buffer_updated(n)
            while (frame := reader.next_frame()) is not None:
                frames += 1
                for op, rid, _, aux, blob in iter_records(frame):
                    assert op == REPLY
                    replies[rid] = (KINDS[aux], codec.loads(blob))
        assert replies[1] == ("#RETURN", None) and replies[2] == ("#RETURN", None)
        assert replies[3] == ("#RETURN", 2)
        assert replies[4][0] == "#TRACEBACK" and "'nope'" in replies[4][1]
        assert frames == 1  # the four replies went out together
    finally:
        sock.close()


class _Echo:
    def echo(self, value: Any) -> Any:
        return value


class EchoManager(BaseManager):
    pass


EchoManager.register("Echo", _Echo)


@pytest.mark.slow
def test_a_client_that_reads_no_replies_is_no_longer_read(serve: ServeFn) -> None:
    """A peer that sends calls but reads none of their replies: once the replies
    waiting for it pass the transport's limit, the server stops reading it (as
    the stdlib's thread per connection blocks in its send), instead of reading
    and answering without bound."""
    server, client = serve(EchoManager)
    echo: Any = client.Echo()
    ident = echo._id
    codec = PickleCodec()
    blob = codec.dumps((ident, "echo", (b"x" * 65536,), {}))
    sock = _native_socket(server.address)
    sock.settimeout(2.0)  # a send that waits this long: the server has stopped reading
    sent = 0
    try:
        with pytest.raises(TimeoutError):
            for rid in range(1, 1001):  # 64 MiB of replies, if the server never stopped
                # Each call its own request id (one in flight twice drops the connection).
                payload = b"".join(record(CALL, rid, 7, 0, blob))
                sock.sendall(encode_header(len(payload)) + payload)
                sent += 1
    finally:
        sock.close()
    assert sent < 1000


def test_native_only_server_refuses_stdlib_clients(serve: ServeFn) -> None:
    server, client = serve(QM, serializer="native", config=ServerConfig())
    with pytest.raises(EOFError), Client(server.address, AUTHKEY) as conn:
        dispatch(conn, None, "dummy")
    assert client._number_of_objects() == 0  # a distproc client is served


class Custom:
    pass


def test_native_serializer_never_sends_pickle(serve: ServeFn) -> None:
    server, _ = serve(QM)  # a server that would allow pickle
    client = QM(address=server.address, authkey=AUTHKEY, serializer="native")
    client.connect()
    q: Any = client.Queue()  # type: ignore[attr-defined]
    assert q._native().codec.name == "native"
    q.put((1, "two", b"3", {4.0}))
    assert q.get() == (1, "two", b"3", {4.0})
    with pytest.raises(TypeError, match="Custom"):
        q.put(Custom())


class StdlibQM(StdlibManager):
    pass


StdlibQM.register("Queue", queue.Queue)


def test_native_serializer_against_a_stdlib_server_is_refused(
    stdlib_manager: Callable[..., Any],
) -> None:
    server = stdlib_manager(StdlibQM)
    client = QM(address=server.address, authkey=AUTHKEY, serializer="native")
    with pytest.raises(DistprocError, match="not a distproc server"):
        client.connect()


def test_large_values_travel_intact(serve: ServeFn) -> None:
    """Large frames are received into reused buffers and sent without copies:
    values that a caller still holds must never change under it."""
    _, client = serve(QM)
    q: Any = client.Queue()
    sizes = [200_000, 3 * 1024 * 1024 + 17, 1024 * 1024, 200_000]
    payloads = [os.urandom(size) for size in sizes]
    for payload in payloads:
        q.put(payload)
    got = [q.get() for _ in payloads]  # all alive at once
    assert [type(value) for value in got] == [bytes] * len(payloads)
    assert got == payloads
    q.put(("text", "é" * 400_000, bytearray(payloads[0])))
    assert q.get() == ("text", "é" * 400_000, bytearray(payloads[0]))


def test_a_thread_never_waits_for_another_threads_send(serve: ServeFn) -> None:
    """While one thread sends, others leave their records to it and go on; the
    sender looks again after it lets go, so nothing is left behind."""
    _, client = serve(QM)
    q: Any = client.Queue()
    q.qsize()  # connected
    mux = q._native()
    assert mux._send_lock.acquire()  # as if another thread were in the middle of a send
    try:
        q.put("left to the sender")  # returns at once instead of waiting for the lock
        assert len(mux._later) == 1  # one record
    finally:
        mux._send_lock.release()
    mux._send(None)  # what the sender does after it lets go
    assert not mux._later
    assert q.get(timeout=5) == "left to the sender"


def _left_to_a_sender(q: Any, items: list[Any]) -> Multiplexer:
    """Put ``items`` on ``q`` while the send lock is held, as if another thread were
    in the middle of a send: each put leaves its record to that thread."""
    mux: Multiplexer = q._native()
    assert mux._send_lock.acquire()
    try:
        for item in items:
            q.put(item)
    finally:
        mux._send_lock.release()
    return mux


def test_records_left_to_a_sender_go_out_in_order_over_several_frames(serve: ServeFn) -> None:
    """As many records as may wait for a sender, over 64 KiB in all: they go out
    in several frames, whole and in order."""
    _, client = serve(QM)
    q: Any = client.Queue()
    q.qsize()  # connected
    items = [b"%05d" % i * 120 for i in range(PILE_LIMIT)]
    mux = _left_to_a_sender(q, items)
    assert len(mux._later) == PILE_LIMIT
    assert sum(sum(map(len, record)) for record in mux._later) > 2 * BATCH_LIMIT
    mux._send(None)
    assert [q.get(timeout=5) for _ in items] == items


def test_a_batch_never_makes_a_frame_larger_than_its_largest_call(serve: ServeFn) -> None:
    """Records left to a sender go out in frames of at most 64 KiB (a larger record
    alone), so a server's frame limit refuses no batch of calls that it accepts one
    by one."""
    _, client = serve(QM, config=ServerConfig(max_frame=200_000))
    q: Any = client.Queue()
    q.qsize()  # connected
    items = [bytes([i]) * 60_000 for i in range(12)]  # each sent without waiting
    mux = _left_to_a_sender(q, items)
    mux._send(None)
    assert [q.get(timeout=5) for _ in items] == items


def test_replies_read_at_once_go_out_in_frames_within_the_batch_limit(
    serve: ServeFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server batches the replies to the calls of one read, up to BATCH_LIMIT
    bytes a frame, like the client's batches of calls."""
    _, client = serve(QM)
    sent: list[int] = []
    original = ServerConnection.send_parts

    def send_parts(self: ServerConnection, parts: list[Any]) -> None:
        sent.append(sum(map(len, parts)))
        original(self, parts)

    monkeypatch.setattr(ServerConnection, "send_parts", send_parts)
    q: Any = client.Queue()
    q.qsize()  # connected
    items = [bytes([i]) * 20_000 for i in range(8)]
    for item in items:
        q.put(item)
    q.qsize()  # every put applied
    mux = q._native()
    got: list[bytes] = []
    assert mux._send_lock.acquire()  # the gets pile up, to go out in one frame
    try:
        getters = [threading.Thread(target=lambda: got.append(q.get(timeout=10))) for _ in items]
        for getter in getters:
            getter.start()
        deadline = time.monotonic() + 10
        while len(mux._later) < len(items):  # each getter adds one record, then waits
            assert all(getter.is_alive() for getter in getters)
            assert time.monotonic() < deadline
            time.sleep(0.001)  # poll interval, bounded by the deadline
        sent.clear()
    finally:
        mux._send_lock.release()
    mux._send(None)
    for getter in getters:
        getter.join(10)
    assert sorted(got) == items
    assert sum(sent) > 2 * BATCH_LIMIT  # the replies, in several frames
    assert max(sent) <= BATCH_LIMIT


@pytest.mark.slow
def test_a_thread_waits_for_the_sender_once_too_much_is_left_to_it(serve: ServeFn) -> None:
    """Calls sent without waiting pile up while another thread is sending; past a
    bound, a thread waits for the socket like a thread sending alone would."""
    _, client = serve(QM)
    q: Any = client.Queue()
    q.qsize()  # connected
    mux = q._native()
    count = 20 * PILE_LIMIT
    assert mux._send_lock.acquire()  # a send that the socket holds up

    def produce() -> None:
        for i in range(count):
            q.put(i)

    producer = threading.Thread(target=produce)
    try:
        producer.start()
        producer.join(1.0)  # bounded: what is checked is that it has not finished
        assert producer.is_alive()
        assert len(mux._later) <= PILE_LIMIT + 1
    finally:
        mux._send_lock.release()
    producer.join(30)
    assert not producer.is_alive()
    assert [q.get(timeout=5) for _ in range(count)] == list(range(count))


@pytest.mark.slow
def test_many_threads_sending_at_once_lose_nothing(serve: ServeFn) -> None:
    _, client = serve(QM)
    q: Any = client.Queue()
    threads, per_thread = 8, 300

    def produce(index: int) -> None:
        for i in range(per_thread):
            q.put((index, i))

    pool = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    got = [q.get(timeout=5) for _ in range(threads * per_thread)]
    assert sorted(got) == [(n, i) for n in range(threads) for i in range(per_thread)]
    for n in range(threads):  # each thread's puts arrive in the order it made them
        assert [i for index, i in got if index == n] == list(range(per_thread))


FORK_SCRIPT = """
import multiprocessing, os, sys
from distproc.managers import SyncManager

m = SyncManager(address=("127.0.0.1", 0), authkey=b"k", ctx=multiprocessing.get_context("spawn"))
m.start()
q = m.Queue()
q.put("parent")  # the parent's connection exists before the fork
pid = os.fork()
if pid == 0:
    code = 1
    try:
        inherited = q._mux
        assert q._native() is not inherited  # a new connection, not the parent's
        q.put(("child", os.getpid()))
        code = 0
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert q.get(timeout=5) == "parent"
assert q.get(timeout=5) == ("child", pid)
m.shutdown()
print("ok")
"""


@pytest.mark.slow
def test_a_forked_child_opens_its_own_connection() -> None:
    """A child never reads or writes its parent's socket: its proxies reconnect."""
    out = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


EXIT_SCRIPT = """
import threading
from distproc.managers import SyncManager

server = SyncManager(address=("127.0.0.1", 0), authkey=b"k").get_server()
thread = threading.Thread(target=server.serve)
thread.start()
server.started.wait(10)
m = SyncManager(address=server.address, authkey=b"k")
m.connect()
q = m.Queue()
q.put(1)
assert q.get() == 1
del q
server.stop()
thread.join(10)
print("ok")
"""


def test_no_connection_is_left_for_the_interpreter_to_collect() -> None:
    """At exit, this process's native connections are closed, even when their
    server stopped without the client noticing (-X dev shows what is left)."""
    out = subprocess.run(
        [sys.executable, "-X", "dev", "-c", EXIT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert "ResourceWarning" not in out.stderr, out.stderr


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_a_new_manager_reaches_a_server_restarted_at_the_same_address(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if transport == "tcp":
        monkeypatch.setenv("DISTPROC_LOCAL_SOCKET", "0")
    first = serve_in_thread(QM(address=("127.0.0.1", 0), authkey=AUTHKEY).get_server())
    address = first.address
    try:
        old: Any = QM(address=address, authkey=AUTHKEY)
        old.connect()
        q: Any = old.Queue()
        q.put(1)
        assert q.get() == 1  # this process's connection to the first server is cached
        mux = q._native()
        family = socket.AF_UNIX if transport == "unix" else socket.AF_INET
        assert mux.sock.family == family
    finally:
        first.stop()
    second = serve_in_thread(QM(address=address, authkey=AUTHKEY).get_server())  # the same port
    try:
        new: Any = QM(address=address, authkey=AUTHKEY)
        new.connect()  # not on the dead server's connection
        q2: Any = new.Queue()
        q2.put(2)
        assert q2.get() == 2
        assert mux.broken is not None and q2._native() is not mux
        assert len(second.server.connections) == 1
    finally:
        close_multiplexers(address)
        second.stop()


def test_queue_calls_served_at_once_make_no_call_object(
    serve: ServeFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = serve(QM)
    q: Any = client.Refusing()
    bounded: Any = client.RefusingBounded()
    for proxy in (q, bounded):  # the first call works out how the queue is served
        proxy.put(0)
        assert proxy.get() == 0
    made: list[str] = []
    original = server_native._NativeCall.__init__

    def counting(self: Any, session: Any, rid: int, tid: int, noreply: bool) -> None:
        made.append("call")
        original(self, session, rid, tid, noreply)

    monkeypatch.setattr(server_native._NativeCall, "__init__", counting)
    for proxy in (q, bounded):
        for i in range(3):
            proxy.put(i)
            assert proxy.get() == i
    assert made == []
    # Errors are those of the general path: deferred for a deferred put (it
    # comes in before the reply to the call after the put, and is raised by the
    # call after that) ...
    q.put("refused")
    assert q.qsize() == 0
    with pytest.raises(ValueError, match="refused by _put"):
        q.qsize()
    # ... raised at once for a put that waits for its reply
    with pytest.raises(ValueError, match="refused by _put"):
        bounded.put("refused")
    assert q.qsize() == bounded.qsize() == 0
    assert made  # the general path (qsize) does make them: the count above is live


def test_native_sessions_share_their_codec(serve: ServeFn) -> None:
    """A codec keeps nothing per connection: an idle connection has none of its own."""
    server, client = serve(QM)
    client.Queue()  # the fixture's client: one native connection

    async def second_connection() -> list[Any]:
        manager = await distproc.aio.connect(server.address, AUTHKEY, QM)
        try:
            await manager.Queue()
            return [conn.session.codec for conn in server.connections if conn.session]
        finally:
            await manager.aclose()

    codecs = asyncio.run(second_connection())
    assert len(codecs) == 2
    assert codecs[0] is codecs[1] is server.session_codec("pickle")
