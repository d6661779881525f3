"""Bad frames after a successful handshake: garbage, truncation, oversize, pipelining."""

from __future__ import annotations

import logging
import pickle
import struct
import time

import pytest
from shared_fixtures import wait_until

from distproc.server import ServerConfig

from ._support import QueueServer, ServerFactory
from ._wire import (
    PeerClosed,
    WireClient,
    frame,
    open_channel,
    reset_close,
    round_trip,
    server_call,
)

PROMPT = 2.0
MiB = 1024 * 1024

GARBAGE = [
    pytest.param(b"\x00\x01\x02garbage\xff\xfe", id="binary-garbage"),
    pytest.param(b"", id="empty"),
    pytest.param(b"(lp0\nI1\na.", id="pickle-protocol-0-list-not-a-request"),
    pytest.param(pickle.dumps(42), id="pickled-int"),
    pytest.param(pickle.dumps(("x", "y")), id="pickled-2-tuple"),
    pytest.param(pickle.dumps((None, 123, (), {})), id="methodname-not-str"),
    pytest.param(pickle.dumps((None, "dummy", 5, {})), id="args-not-iterable"),
    pytest.param(pickle.dumps((None, "dummy", (), 5)), id="kwds-not-a-mapping"),
    pytest.param(pickle.dumps((None, "dummy", (), {}))[:-3], id="truncated-pickle"),
    pytest.param(b"cno_such_module_xyz\nthing\n.", id="unknown-module-global"),
    pytest.param(b"\x80\x05\x95" + b"\xff" * 8, id="pickle-bogus-frame-length"),
    pytest.param(b"<?xml version='1.0'?><methodCall/>", id="xml"),
]


def _expect_traceback_or_close(c: WireClient) -> bool:
    """After a bad request: a ``#TRACEBACK`` reply (True) or a close (False)."""
    try:
        kind, result = c.recv_reply()
    except PeerClosed:
        return False
    assert kind == "#TRACEBACK", (kind, result)
    assert isinstance(result, str) and result
    return True


# ---------------------------------------------------------------- garbage
@pytest.mark.parametrize("payload", GARBAGE)
def test_garbage_first_request(server: QueueServer, payload: bytes) -> None:
    with WireClient(server.address) as c:
        c.handshake(server.authkey)
        c.send_frame(payload)
        _expect_traceback_or_close(c)
        c.wait_closed(PROMPT)  # a one-shot connection closes after its reply
    round_trip(server.address, server.authkey)


@pytest.mark.parametrize("payload", GARBAGE)
def test_garbage_on_a_channel(server: QueueServer, payload: bytes) -> None:
    ident, _ = server_call(server.address, server.authkey, "create", ("Queue",))
    with open_channel(server.address, server.authkey) as ch:
        ch.call(ident, "put", ("before",))
        ch.send_frame(payload)
        if _expect_traceback_or_close(ch):
            # The server kept the channel open: it must still be in step.
            assert ch.call(ident, "get", ()) == "before"
            assert ch.call(ident, "qsize", ()) == 0
    round_trip(server.address, server.authkey)
    server_call(server.address, server.authkey, "decref", (ident,))


def test_garbage_pipelined_between_good_requests(server: QueueServer) -> None:
    """Good, bad, good in one write: the replies come back in order, one per request."""
    ident, _ = server_call(server.address, server.authkey, "create", ("Queue",))
    with open_channel(server.address, server.authkey) as ch:
        ch.send_raw(
            frame(WireClient.encode_request(ident, "put", ("a",)))
            + frame(b"\x00garbage")
            + frame(WireClient.encode_request(ident, "get"))
        )
        assert ch.recv_reply() == ("#RETURN", None)
        if _expect_traceback_or_close(ch):
            assert ch.recv_reply() == ("#RETURN", "a")
    round_trip(server.address, server.authkey)
    server_call(server.address, server.authkey, "decref", (ident,))


def test_unknown_server_method(server: QueueServer) -> None:
    with WireClient(server.address) as c:
        c.handshake(server.authkey)
        kind, result = c.request(None, "no_such_server_method")
        assert kind == "#TRACEBACK"
        assert "no_such_server_method" in result
    with WireClient(server.address) as c:
        c.handshake(server.authkey)
        kind, result = c.request(None, "__init__", ({}, None, b"", "pickle"))
        assert kind == "#TRACEBACK"
    round_trip(server.address, server.authkey)


def test_request_for_unknown_ident_keeps_channel(server: QueueServer) -> None:
    ident, _ = server_call(server.address, server.authkey, "create", ("Queue",))
    with open_channel(server.address, server.authkey) as ch:
        for bad in ("ffffffff", None, 12, ("tuple",)):
            kind, result = ch.request(bad, "qsize")  # type: ignore[arg-type]
            assert kind == "#TRACEBACK", (bad, kind, result)
        assert ch.call(ident, "qsize") == 0
    server_call(server.address, server.authkey, "decref", (ident,))
    round_trip(server.address, server.authkey)


def test_decref_of_unknown_ident(server: QueueServer) -> None:
    with WireClient(server.address) as c:
        c.handshake(server.authkey)
        kind, result = c.request(None, "decref", ("dead",))
        assert kind == "#TRACEBACK" and "dead" in result
    round_trip(server.address, server.authkey)


# ------------------------------------------------------- truncation and closes
@pytest.mark.parametrize("close", ["fin", "rst"])
@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"\x00\x00\x10", id="partial-header"),
        pytest.param(struct.pack("!i", 1000), id="header-only"),
        pytest.param(struct.pack("!i", 1000) + b"\x80\x04" + b"x" * 500, id="half-payload"),
        pytest.param(struct.pack("!iQ", -1, 5000) + b"x" * 100, id="64bit-header-half-payload"),
    ],
)
@pytest.mark.parametrize("stage", ["first-request", "channel"])
def test_peer_closes_mid_frame(
    server: QueueServer, stage: str, partial: bytes, close: str
) -> None:
    c = WireClient(server.address)
    try:
        c.handshake(server.authkey)
        if stage == "channel":
            c.call(None, "accept_connection", ("mid-frame",))
        c.send_raw(partial)
    finally:
        if close == "rst":
            reset_close(c.sock)
        else:
            c.close()
    round_trip(server.address, server.authkey)
    wait_until(
        lambda: not server.server.connections,
        "the server kept a closed connection",
        timeout=5.0,
    )


def test_peer_closes_while_its_reply_is_being_computed(server: QueueServer) -> None:
    """The client sends a request that runs on a pool thread and disconnects at once."""
    ident, _ = server_call(server.address, server.authkey, "create", ("Thing",))
    for close in (WireClient.close, lambda c: reset_close(c.sock)):
        ch = open_channel(server.address, server.authkey)
        ch.send_request(ident, "ok", ("x" * 100_000,))
        close(ch)
    round_trip(server.address, server.authkey)
    with open_channel(server.address, server.authkey) as ch:
        assert ch.call(ident, "ok", (1,)) == 1
    server_call(server.address, server.authkey, "decref", (ident,))


# ------------------------------------------------------------------ max_frame
@pytest.mark.parametrize("stage", ["first-request", "channel"])
@pytest.mark.parametrize(
    "header",
    [
        pytest.param(struct.pack("!i", MiB + 1), id="limit+1"),
        pytest.param(struct.pack("!i", 0x7FFFFFFF), id="2GiB"),
        pytest.param(struct.pack("!iQ", -1, 1 << 40), id="64bit-1TiB"),
        pytest.param(struct.pack("!i", -5), id="negative"),
    ],
)
def test_frame_over_max_frame_is_dropped(
    server_factory: ServerFactory, stage: str, header: bytes
) -> None:
    srv = server_factory(ServerConfig(max_frame=MiB, handshake_timeout=30.0))
    with WireClient(srv.address) as c:
        c.handshake(srv.authkey)
        if stage == "channel":
            c.call(None, "accept_connection", ("too-big",))
        start = time.monotonic()
        c.send_raw(header)  # the header alone: the server must not wait for the payload
        assert c.wait_closed(PROMPT) == b""
        assert time.monotonic() - start < PROMPT
    round_trip(srv.address, srv.authkey)


def test_frame_over_max_frame_with_payload_is_dropped(server_factory: ServerFactory) -> None:
    """The whole oversized frame is sent; the server drops the connection, not the loop."""
    srv = server_factory(ServerConfig(max_frame=MiB, handshake_timeout=30.0))
    ident, _ = server_call(srv.address, srv.authkey, "create", ("Queue",))
    with open_channel(srv.address, srv.authkey) as ch:
        payload = WireClient.encode_request(ident, "put", (b"x" * (MiB + 100),))
        assert len(payload) > MiB
        try:
            ch.send_frame(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server dropped us while we were still sending
        else:
            assert ch.wait_closed(PROMPT) == b""
    round_trip(srv.address, srv.authkey)
    with open_channel(srv.address, srv.authkey) as ch:
        assert ch.call(ident, "qsize") == 0  # the oversized put did not happen
    server_call(srv.address, srv.authkey, "decref", (ident,))


def _request_of_size(ident: str, size: int) -> bytes:
    """A ``put`` request whose pickle is exactly ``size`` bytes."""
    n = size
    for _ in range(5):  # the pickle's overhead depends (a little) on the size
        payload = WireClient.encode_request(ident, "put", (b"x" * n,))
        if len(payload) == size:
            break
        n -= len(payload) - size
    assert len(payload) == size, (len(payload), size)
    return payload


@pytest.mark.parametrize("size", [MiB, MiB - 1, MiB // 2])
def test_frame_at_or_under_max_frame_works(server_factory: ServerFactory, size: int) -> None:
    srv = server_factory(ServerConfig(max_frame=MiB, handshake_timeout=30.0))
    ident, _ = server_call(srv.address, srv.authkey, "create", ("Queue",))
    with open_channel(srv.address, srv.authkey) as ch:
        ch.send_frame(_request_of_size(ident, size))
        assert ch.recv_reply() == ("#RETURN", None)
        item = ch.call(ident, "get")
        assert isinstance(item, bytes) and len(item) > size - 100
    server_call(srv.address, srv.authkey, "decref", (ident,))
    round_trip(srv.address, srv.authkey)


def test_max_frame_logs_one_warning(
    server_factory: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="distproc.server")
    srv = server_factory(ServerConfig(max_frame=MiB))
    with WireClient(srv.address) as c:
        c.handshake(srv.authkey)
        c.send_raw(struct.pack("!i", MiB + 1))
        c.wait_closed(PROMPT)
    round_trip(srv.address, srv.authkey)
    records = [r for r in caplog.records if r.name == "distproc.server"]
    assert len(records) == 1, [r.getMessage() for r in records]


# ------------------------------------------------------- pipelined first request
@pytest.mark.parametrize("items", [10, 300], ids=["small", "over-256-bytes"])
def test_first_request_in_the_same_write_as_welcome(
    server_factory: ServerFactory, items: int
) -> None:
    """A client may send its first request right behind its ``#WELCOME#``.

    The stdlib client does exactly that (it writes the WELCOME, then the request,
    without waiting), so both can reach the server in one read.  The request is
    then bigger than the 256-byte handshake limit but must still be accepted:
    the handshake limit applies to handshake frames only.
    """
    srv = server_factory(ServerConfig(max_frame=MiB, handshake_timeout=30.0))
    request = WireClient.encode_request(None, "create", ("list", list(range(items))))
    with WireClient(srv.address) as c:
        c.handshake(srv.authkey, then=frame(request))
        kind, result = c.recv_reply()
        assert kind == "#RETURN", result
        ident, _exposed = result
    with open_channel(srv.address, srv.authkey) as ch:
        assert ch.call(ident, "index", (items - 1,)) == items - 1
    server_call(srv.address, srv.authkey, "decref", (ident,))
    round_trip(srv.address, srv.authkey)


def test_client_that_never_reads_replies(server: QueueServer) -> None:
    """A client that pipelines requests and never reads does not stall the loop."""
    ident, _ = server_call(server.address, server.authkey, "create", ("Thing",))
    blob = b"y" * 200_000
    with open_channel(server.address, server.authkey) as greedy:
        burst = frame(WireClient.encode_request(ident, "ok", (blob,)))
        greedy.timeout = 0.5
        for _ in range(50):  # ~10 MB of replies nobody reads
            try:
                greedy.send_raw(burst)
            except TimeoutError:
                break  # the server applies back-pressure: fine too
        round_trip(server.address, server.authkey)
    round_trip(server.address, server.authkey)
    server_call(server.address, server.authkey, "decref", (ident,))
