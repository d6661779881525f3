"""What one authenticated (or not yet authenticated) peer may take of a server.

Each test sends, for real, what a hostile or broken peer sent when distproc
was attacked (issue 18, section 2), and then checks that a good client is
still served promptly (``round_trip``).  Memory is the server's resident set:
the server runs in a thread of this process, so it is this process's
(``/proc/self/statm``), read before and after.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import queue
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator

import pytest
from shared_fixtures import AUTHKEY, serve_in_thread, wait_until

from distproc.server import Server, ServerConfig
from distproc.wire.proxy_methods import LIST_METHODS

from ._native_wire import NativeWire, call_record
from ._objects import waiting_getters
from ._support import QueueServer, ServerFactory
from ._wire import WireClient, frame, open_channel, round_trip, server_call

MiB = 1024 * 1024


def rss() -> int:
    """This process's resident memory, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def push_until_stuck(sock: socket.socket, data: bytes, total: int, stuck: float = 2.0) -> int:
    """Write ``data`` again and again, up to ``total`` bytes, until the peer stops
    reading (nothing more is taken for ``stuck`` seconds); return the bytes written."""
    sock.setblocking(False)
    sent = 0
    view = memoryview(data)
    pos = 0
    try:
        while sent < total:
            try:
                n = sock.send(view[pos:])
            except BlockingIOError:
                _, writable, _ = select.select([], [sock], [], stuck)
                if not writable:
                    break  # the server reads no more of us
                continue
            sent += n
            pos = (pos + n) % len(data)
    finally:
        sock.setblocking(True)
    return sent


# ------------------------------------------------- the stdlib channel's requests
@pytest.mark.slow
def test_a_stdlib_channel_that_pipelines_is_slowed_not_buffered(server: QueueServer) -> None:
    """After a ``get()`` blocks, 256 MiB of pipelined requests: the server stops
    reading the channel, holds a bounded amount, and serves everything in order
    once the ``get()`` returns; a good client is served meanwhile."""
    ident, _ = server_call(server.address, AUTHKEY, "create", ("get_queue",))
    channel = open_channel(server.address, AUTHKEY)
    try:
        channel.send_request(ident, "get", ())
        wait_until(lambda: waiting_getters(server.shared_queue) == 1, "the get() never parked")
        # qsize() takes no argument: each request is a 1 MiB frame that fails alone.
        request = frame(WireClient.encode_request(ident, "qsize", (b"x" * MiB,)))
        before = rss()
        sent = push_until_stuck(channel.sock, request, 256 * MiB)
        grown = rss() - before
        assert sent < 64 * MiB, f"the server read {sent / MiB:.0f} MiB behind a blocked call"
        assert grown < 64 * MiB, f"the server's memory grew by {grown / MiB:.0f} MiB"
        round_trip(server.address, AUTHKEY)
        # The get() gets its item; then every request sent is answered, in order.
        whole, rest = divmod(sent, len(request))
        finisher = threading.Thread(target=channel.sock.sendall, args=(request[rest:],))
        finisher.start()
        server_call(server.address, AUTHKEY, "create", ("get_queue",))  # keep it alive
        server.shared_queue.put("item")
        assert channel.recv_reply() == ("#RETURN", "item")
        for _ in range(whole + (1 if rest else 0)):
            kind, value = channel.recv_reply()
            assert kind == "#ERROR" and isinstance(value, TypeError)
        finisher.join(10)
        assert channel.call(ident, "qsize", ()) == 0
    finally:
        channel.close()


# --------------------------------------------------- a length prefix is no buffer
@pytest.mark.slow
def test_length_prefixes_alone_buy_no_memory(server: QueueServer) -> None:
    """30 connections each declare a frame just under ``max_frame`` and send one byte."""
    declared = ServerConfig().max_frame - 1
    before = rss()
    peers = []
    try:
        for _ in range(30):
            peer = open_channel(server.address, AUTHKEY)
            peers.append(peer)
            peer.send_raw(struct.pack("!i", declared) + b"x")
        # The server has read each prefix once a later request on a fresh channel is served.
        round_trip(server.address, AUTHKEY)
        wait_until(lambda: rss() - before > 0, "nothing read")
        grown = rss() - before
        assert grown < 200 * MiB, f"30 five-byte sends cost {grown / MiB:.0f} MiB"
    finally:
        for peer in peers:
            peer.close()


def test_a_large_frame_still_arrives_whole(server: QueueServer) -> None:
    """Growing the buffer as bytes arrive keeps large frames intact."""
    payload = os.urandom(5 * MiB + 3)
    ident, _ = server_call(server.address, AUTHKEY, "create", ("Queue",))
    with open_channel(server.address, AUTHKEY) as channel:
        channel.call(ident, "put", (payload,))
        assert channel.call(ident, "get", ()) == payload


def test_a_closed_native_connection_is_freed_without_the_collector(
    server: QueueServer,
) -> None:
    """A closed connection and its session hold each other in no cycle: they are
    freed when the connection closes, not at the collector's next run."""
    gc.collect()
    gc.disable()
    try:
        peer = NativeWire(server.address, AUTHKEY)
        assert peer.call(None, "number_of_objects") == 0
        wait_until(lambda: server.server.connections, "the server has no connection")
        conn = weakref.ref(next(iter(server.server.connections)))
        session = weakref.ref(conn().session)  # type: ignore[union-attr]
        peer.close()
        wait_until(lambda: conn() is None and session() is None, "the connection was not freed")
    finally:
        gc.enable()
    round_trip(server.address, AUTHKEY)


@pytest.fixture
def small_bounds() -> Iterator[Server]:
    """A server of ``Event`` objects (whose ``wait()`` runs on a thread), queues and
    lists (with the methods a ``ListProxy`` calls), with small per-connection
    bounds, so that a test can reach them."""
    registry = {
        "Event": (threading.Event, None, None, None),
        "Queue": (queue.Queue, None, None, None),
        "list": (list, LIST_METHODS, None, None),
    }
    server = Server(
        registry,
        ("127.0.0.1", 0),
        AUTHKEY,
        "pickle",
        config=ServerConfig(max_threads_per_connection=50, max_calls_per_connection=1_000),
    )
    running = serve_in_thread(server)
    yield server
    running.stop()


# -------------------------------------------------- what one frame may expand to
def _first_reply_from(*peers: socket.socket, timeout: float = 30.0) -> socket.socket:
    readable, _, _ = select.select(list(peers), [], [], timeout)
    assert readable, "no reply at all"
    return readable[0]


@pytest.mark.slow
def test_a_frame_of_millions_of_empty_arrays_is_refused_without_stalling_others(
    server: QueueServer,
) -> None:
    """32 MiB of empty arrays (33 million values) as a call's argument: the call
    fails alone, the server's memory stays put, and a good client's call, sent
    after it, is answered first."""
    ident, _ = server_call(server.address, AUTHKEY, "create", ("Queue",))
    bomb = NativeWire(server.address, AUTHKEY)
    good = NativeWire(server.address, AUTHKEY)
    try:
        count = 32 * MiB
        blob = (
            b"\x94"  # [ident, "put", args, kwds]
            + bomb.codec.dumps(ident)
            + bomb.codec.dumps("put")
            + b"\x91\xdd"  # args: one array of `count` empty arrays
            + struct.pack("!I", count)
            + b"\x90" * count
            + b"\x80"
        )
        before = rss()
        bomb.send_records(call_record(7, blob))
        good.send_call(8, None, "number_of_objects")
        assert _first_reply_from(bomb.sock, good.sock) is good.sock
        assert good.replies(1)[8] == ("#RETURN", 1)
        kind, text = bomb.replies(1)[7]
        assert kind == "#TRACEBACK" and "max_array_len" in text, text
        assert rss() - before < 256 * MiB
        assert bomb.call(ident, "qsize") == 0  # the connection is still served
    finally:
        bomb.close()
        good.close()
    round_trip(server.address, AUTHKEY)


def test_a_payload_of_many_containers_is_counted(server: QueueServer) -> None:
    """Past the budget of values (``max_decoded_items``), a call fails alone,
    with the budget's name; below it, the same shape is served."""
    ident, _ = server_call(server.address, AUTHKEY, "create", ("Queue",))
    with NativeWire(server.address, AUTHKEY) as peer:
        server.server.config.max_decoded_items = 1_000_000
        peer.send_call(1, ident, "put", ([[]] * 200_000,))  # 200,000 containers: over
        kind, text = peer.replies(1)[1]
        assert kind == "#TRACEBACK" and "more than 1000000 values" in text, text
        assert peer.call(ident, "put", ([[1, 2]] * 30_000,)) is None  # under: served
        assert peer.call(ident, "get") == [[1, 2]] * 30_000


def test_a_container_multiplied_by_millions_is_refused(small_bounds: Server) -> None:
    """``ListProxy *= 30_000_000`` (a few bytes sent) would build 30 million items
    on the loop, holding the GIL: past ``max_decoded_items`` it fails at once,
    naming the bound, and costs nothing; a smaller repetition is served."""
    address = small_bounds.address
    ident, _ = server_call(address, AUTHKEY, "create", ("list",))
    with NativeWire(address, AUTHKEY) as peer:
        peer.call(ident, "append", (1,))
        before = rss()
        for method in ("__imul__", "__mul__", "__rmul__"):
            peer.send_call(5, ident, method, (30_000_000,))
            kind, error = peer.replies(1)[5]
            assert kind == "#ERROR" and "max_decoded_items" in str(error), error
        assert rss() - before < 64 * MiB
        round_trip(address, AUTHKEY)
        assert peer.call(ident, "__mul__", (3,)) == [1, 1, 1]
        assert peer.call(ident, "__len__") == 1


@pytest.mark.slow
def test_pipelined_blocking_calls_hold_a_bounded_number_of_threads(small_bounds: Server) -> None:
    """2,000 pipelined ``wait()`` calls: the connection holds 50 threads, the rest
    wait their turn, and every call is answered once the event is set."""
    address = small_bounds.address
    ident, _ = server_call(address, AUTHKEY, "create", ("Event",))
    threads_before = threading.active_count()
    with NativeWire(address, AUTHKEY) as peer:
        config = small_bounds.config
        config.max_calls_per_connection = 10_000
        peer.send_records(
            *(call_record(rid, peer.encode(ident, "wait", (60,))) for rid in range(1, 2001))
        )
        wait_until(
            lambda: threading.active_count() - threads_before >= 50, "the calls never started"
        )
        round_trip(address, AUTHKEY)
        assert threading.active_count() - threads_before <= 50 + 5
        with NativeWire(address, AUTHKEY) as other:
            other.call(ident, "set")
        replies = peer.replies(2000)
        assert all(reply == ("#RETURN", True) for reply in replies.values())


@pytest.mark.slow
def test_calls_parked_on_one_connection_are_bounded_and_freed(small_bounds: Server) -> None:
    """1,500 ``get()``s of an empty queue on one connection: 1,000 park
    (``max_calls_per_connection``), 500 fail at once naming the bound; when the
    connection drops, its waiters go, and a later item reaches a live consumer."""
    address = small_bounds.address
    ident, _ = server_call(address, AUTHKEY, "create", ("Queue",))
    peer = NativeWire(address, AUTHKEY)
    try:
        peer.send_records(*(call_record(rid, peer.encode(ident, "get")) for rid in range(1, 1501)))
        refused = peer.replies(500)
        assert set(refused) == set(range(1001, 1501))
        assert all("max_calls_per_connection" in text for _, text in refused.values())
        round_trip(address, AUTHKEY)
    finally:
        peer.close()
    with NativeWire(address, AUTHKEY) as consumer:
        entry = small_bounds.table.get(ident)
        wait_until(lambda: waiting_getters(entry.obj) == 0, "the dead connection's waiters stayed")
        consumer.send_call(1, ident, "get")
        with NativeWire(address, AUTHKEY) as producer:
            producer.call(ident, "put", ("item",))
        assert consumer.replies(1)[1] == ("#RETURN", "item")


# ------------------------------------------------------ connections in the handshake
_FLOOD = """
import resource, select, socket, sys, time
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, count, hosts = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
socks = []
for i in range(count):
    s = socket.socket()
    s.bind((f"127.0.1.{1 + i % hosts}", 0))
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    socks.append(s)
# Every connect is through (or refused) before the good client comes.
pending, deadline = list(socks), time.monotonic() + 30
while pending and time.monotonic() < deadline:
    poller = select.poll()
    for s in pending:
        poller.register(s, select.POLLOUT)
    done = {fd for fd, _ in poller.poll(500)}
    pending = [s for s in pending if s.fileno() not in done]
print("connected", len(pending), flush=True)
sys.stdin.read()
"""


def stop_flood(flood: subprocess.Popen[str]) -> None:
    """Kill the flooding child process and close its pipes."""
    flood.kill()
    flood.wait(10)
    for stream in (flood.stdin, flood.stdout):
        if stream is not None:
            stream.close()


@pytest.mark.slow
@pytest.mark.parametrize("hosts", [1, 20], ids=["one-peer", "twenty-peers"])
def test_idle_unauthenticated_connections_leave_room_for_a_good_client(
    server_factory: ServerFactory, hosts: int
) -> None:
    """With 1,024 descriptors, 2,000 connections that never speak (from one
    address, or from twenty): the server keeps at most ``max_handshaking`` of
    them, and a good client is served at once."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        srv = server_factory(ServerConfig(handshake_timeout=60.0))
        flood = subprocess.Popen(
            [sys.executable, "-c", _FLOOD, str(srv.address[1]), "2000", str(hosts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert flood.stdout is not None
            assert flood.stdout.readline().strip() == "connected 0"
            config = srv.server.config
            wait_until(
                lambda: len(srv.server.connections) >= min(config.max_handshaking, 128 * hosts),
                "the flood never reached the server",
            )
            # Those dropped to make room leave as the loop gets to them.
            wait_until(
                lambda: len(srv.server.connections) <= config.max_handshaking,
                "more connections in the handshake than max_handshaking",
            )
            round_trip(srv.address, AUTHKEY)
        finally:
            stop_flood(flood)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --------------------------------------------------------------------- backlog
_STOPPED_SERVER = """
import sys
from distproc.server import Server, ServerConfig
from distproc.wire.proxy_methods import LIST_METHODS
server = Server({}, ("127.0.0.1", 0), b"k", "pickle", config=ServerConfig(backlog=int(sys.argv[1])))
server.on_start.append(lambda: print(server.address[1], flush=True))
server.serve()
"""


@pytest.mark.slow
def test_the_backlog_is_the_configured_one() -> None:
    """A server that does not accept for a while (stopped with SIGSTOP): the
    kernel completes ``ServerConfig.backlog`` connects for it, not asyncio's 100."""
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-c", _STOPPED_SERVER, "1000"], stdout=subprocess.PIPE, text=True
    )
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGSTOP)
        for _ in range(600):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            socks.append(s)
        pending = list(socks)
        deadline = time.monotonic() + 5.0  # well before a dropped SYN's retries end
        while pending and time.monotonic() < deadline:
            _, ready, _ = select.select([], pending, [], 0.5)
            pending = [s for s in pending if s not in ready]
        assert not pending, f"{len(pending)} of 600 connects waited: the backlog is too short"
        os.kill(proc.pid, signal.SIGCONT)
    finally:
        for s in socks:
            s.close()
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


# ------------------------------------------------------------------ log flooding
@pytest.mark.slow
def test_failed_handshakes_are_logged_at_a_bounded_rate(
    server: QueueServer, caplog: pytest.LogCaptureFixture
) -> None:
    """300 peers that fail the handshake: ten lines, then one that counts the rest."""
    caplog.set_level(logging.INFO, logger="distproc.server")
    for _ in range(300):
        with WireClient(server.address) as peer:
            peer.recv_challenge()
            peer.send_frame(b"{sha256}" + b"\0" * 32)
            assert peer.recv_frame() == b"#FAILURE#"
    round_trip(server.address, AUTHKEY)
    lines = [r.getMessage() for r in caplog.records if r.name == "distproc.server"]
    assert len(lines) == 10, lines
    server.stop()
    assert "290 more lines of auth were not logged" in [
        r.getMessage() for r in caplog.records if r.name == "distproc.server"
    ]


@pytest.mark.slow
def test_out_of_descriptors_is_one_line_without_a_traceback(
    server_factory: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """When ``accept()`` fails for want of descriptors, the log says so in one line
    that says what to do, not with asyncio's traceback for every failure."""
    import resource

    caplog.set_level(logging.INFO, logger="distproc.server")
    caplog.set_level(logging.INFO, logger="asyncio")
    srv = server_factory(ServerConfig(max_handshaking=100_000, max_handshaking_per_peer=100_000))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 20, hard))
    flood = subprocess.Popen(
        [sys.executable, "-c", _FLOOD, str(srv.address[1]), "200", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert flood.stdout is not None
        assert flood.stdout.readline().startswith("connected")
        wait_until(
            lambda: any("cannot accept" in r.getMessage() for r in caplog.records),
            "no line about the failed accept()",
        )
    finally:
        stop_flood(flood)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all(r.exc_info is None for r in errors), [r.getMessage() for r in errors]
    assert "ulimit -n" in errors[0].getMessage()
    srv.stop()
