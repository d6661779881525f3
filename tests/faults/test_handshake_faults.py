"""Bad input before and during the authkey handshake.

Each test sends the bad bytes over a real loopback socket, checks what the
server does with that connection, then checks that a good client is still
served promptly (a full create/put/get/decref round trip within 2 s).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import struct
import time

import pytest
from shared_fixtures import wait_until

from distproc.client.connection import Client, dispatch
from distproc.errors import AuthenticationError
from distproc.server import ServerConfig

from ._support import QueueServer, ServerFactory
from ._wire import (
    CHALLENGE,
    FAILURE,
    WELCOME,
    PeerClosed,
    WireClient,
    frame,
    reset_close,
    round_trip,
)

#: How fast a connection must be dropped when the server can tell from the bytes.
PROMPT = 2.0


def _server_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "distproc.server" and r.levelno >= logging.WARNING
    ]


# --------------------------------------------------------------- wrong authkey
def test_wrong_authkey_raises_and_logs_one_warning(
    server: QueueServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="distproc.server")
    with pytest.raises(multiprocessing.AuthenticationError) as info:
        Client(server.address, b"not-the-authkey", timeout=5.0)
    assert isinstance(info.value, AuthenticationError)
    # The loop logs in the same callback that sends #FAILURE#; a good client's
    # round trip afterwards goes through the loop, so the log line is written by then.
    round_trip(server.address, server.authkey)
    warnings = _server_warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "\n" not in message
    assert "not-the-authkey" not in message and server.authkey.decode() not in message


def test_wrong_authkey_raw_gets_failure_then_close(server: QueueServer) -> None:
    with WireClient(server.address) as c:
        message = c.recv_challenge()
        assert len(message) >= 20
        c.send_frame(b"{sha256}" + os.urandom(32))
        assert c.recv_frame() == FAILURE
        assert c.wait_closed(PROMPT) == b""
    round_trip(server.address, server.authkey)


def test_client_refuses_server_with_other_key(server_factory: ServerFactory) -> None:
    """The mutual half: a server that fails *our* challenge is refused by the client."""
    srv = server_factory(authkey=b"server-key")
    with pytest.raises(multiprocessing.AuthenticationError):
        Client(srv.address, b"client-key", timeout=5.0)
    round_trip(srv.address, srv.authkey)


def test_dispatch_works_after_many_wrong_keys(
    server: QueueServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="distproc.server")
    for i in range(20):
        with pytest.raises(multiprocessing.AuthenticationError):
            Client(server.address, b"wrong-%d" % i, timeout=5.0)
    with Client(server.address, server.authkey, timeout=5.0) as conn:
        assert dispatch(conn, None, "number_of_objects") == 0
    # Ten lines a window get through (see server/lograte.py); the server's stop
    # says how many more there were.
    assert len(_server_warnings(caplog)) == 10
    server.stop()
    assert "10 more lines of auth were not logged" in [
        r.getMessage() for r in _server_warnings(caplog)
    ]


# ------------------------------------------------- garbage instead of an answer
@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(os.urandom(32), id="random-32"),
        pytest.param(os.urandom(16), id="random-16-looks-like-md5"),
        pytest.param(b"", id="empty-frame"),
        pytest.param(b"{sha256}", id="digest-name-only"),
        pytest.param(b"{nosuchdigest}" + os.urandom(32), id="unknown-digest"),
        pytest.param(b"{sha256" + b"x" * 200, id="unterminated-digest-name"),
        pytest.param(WELCOME, id="welcome-instead-of-answer"),
        pytest.param(b"\xff" * 256, id="max-size-garbage"),
    ],
)
def test_garbage_answer_to_challenge(
    server: QueueServer, answer: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="distproc.server")
    with WireClient(server.address) as c:
        c.recv_challenge()
        c.send_frame(answer)
        # The stdlib answers #FAILURE# then closes; nothing else may come back.
        rest = c.wait_closed(PROMPT)
        assert rest in (b"", frame(FAILURE)), rest[:60]
    round_trip(server.address, server.authkey)
    assert len(_server_warnings(caplog)) == 1


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http-request"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), id="tls-hello"),
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="ssh-banner"),
    ],
)
def test_other_protocols_are_dropped(server: QueueServer, raw: bytes) -> None:
    with WireClient(server.address) as c:
        c.recv_challenge()
        start = time.monotonic()
        c.send_raw(raw)
        assert c.wait_closed(PROMPT) in (b"", frame(FAILURE))
        assert time.monotonic() - start < PROMPT
    round_trip(server.address, server.authkey)


@pytest.mark.parametrize(
    "second_half",
    [
        pytest.param(b"not a challenge at all", id="no-challenge-prefix"),
        pytest.param(CHALLENGE + b"short", id="challenge-too-short"),
        pytest.param(CHALLENGE + b"{sha256}", id="challenge-without-nonce"),
        pytest.param(CHALLENGE + os.urandom(33), id="challenge-without-digest-name"),
        pytest.param(CHALLENGE + b"{nosuchdigest}" + os.urandom(40), id="unknown-digest"),
        pytest.param(b"", id="empty-frame"),
    ],
)
def test_garbage_challenge_from_client(server: QueueServer, second_half: bytes) -> None:
    """The client passed the server's challenge, then sent garbage instead of its own."""
    with WireClient(server.address) as c:
        c.answer_challenge(server.authkey)
        c.send_frame(second_half)
        rest = c.wait_closed(PROMPT)
        assert CHALLENGE not in rest and WELCOME not in rest
    round_trip(server.address, server.authkey)


@pytest.mark.parametrize("verdict", [FAILURE, b"#WELCOME", b"", os.urandom(40)])
def test_client_does_not_welcome_the_server(server: QueueServer, verdict: bytes) -> None:
    """Step 6 is not ``#WELCOME#``: the server must close, not start serving."""
    with WireClient(server.address) as c:
        c.answer_challenge(server.authkey)
        c.send_frame(CHALLENGE + b"{sha256}" + os.urandom(40))
        c.recv_frame()  # the server's answer
        c.send_frame(verdict)
        c.send_frame(WireClient.encode_request(None, "number_of_objects"))
        assert c.wait_closed(PROMPT) == b"", "the server answered a request without a welcome"
    round_trip(server.address, server.authkey)


# ------------------------------------------------ length prefixes over the limit
@pytest.mark.parametrize(
    "header",
    [
        pytest.param(struct.pack("!i", 257), id="257"),
        pytest.param(struct.pack("!i", 0x7FFFFFFF), id="2GiB"),
        pytest.param(struct.pack("!iQ", -1, 1 << 40), id="64bit-1TiB"),
        pytest.param(struct.pack("!iQ", -1, (1 << 64) - 1), id="64bit-max"),
        pytest.param(struct.pack("!i", -2), id="negative"),
        pytest.param(struct.pack("!i", -(1 << 31)), id="most-negative"),
    ],
)
def test_handshake_length_over_256_is_dropped_fast(
    server_factory: ServerFactory, header: bytes
) -> None:
    # A long handshake timeout: a drop within PROMPT comes from the length check.
    srv = server_factory(ServerConfig(handshake_timeout=30.0))
    with WireClient(srv.address) as c:
        c.recv_challenge()
        start = time.monotonic()
        c.send_raw(header)
        assert c.wait_closed(PROMPT) == b""
        assert time.monotonic() - start < PROMPT
    round_trip(srv.address, srv.authkey)


def test_handshake_length_exactly_256_is_read(server_factory: ServerFactory) -> None:
    """256 is the stdlib's limit and is allowed: the frame is read, then refused as a digest."""
    srv = server_factory(ServerConfig(handshake_timeout=30.0))
    with WireClient(srv.address) as c:
        c.recv_challenge()
        c.send_raw(struct.pack("!i", 256))
        c.send_raw(b"\x00" * 100)
        with pytest.raises(TimeoutError):  # still waiting for the rest of the frame
            c.sock.settimeout(0.2)
            c.sock.recv(1)
        c.send_raw(b"\x00" * 156)
        assert c.recv_frame() == FAILURE
        assert c.wait_closed(PROMPT) == b""
    round_trip(srv.address, srv.authkey)


def test_handshake_length_over_256_in_second_half(server_factory: ServerFactory) -> None:
    srv = server_factory(ServerConfig(handshake_timeout=30.0))
    with WireClient(srv.address) as c:
        c.answer_challenge(srv.authkey)
        c.send_raw(struct.pack("!i", 10_000_000))
        assert c.wait_closed(PROMPT) == b""
    round_trip(srv.address, srv.authkey)


# ------------------------------------------------- truncated frames and closes
@pytest.mark.parametrize("close", ["fin", "rst"])
@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"\x00\x00", id="half-header"),
        pytest.param(struct.pack("!i", 48), id="header-only"),
        pytest.param(struct.pack("!i", 48) + b"{sha256}" + b"\x00" * 10, id="half-payload"),
        pytest.param(struct.pack("!i", -1) + b"\x00\x00", id="half-64bit-header"),
    ],
)
def test_truncated_handshake_frame_then_close(
    server: QueueServer, partial: bytes, close: str
) -> None:
    c = WireClient(server.address)
    try:
        c.recv_challenge()
        if partial:
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


def test_close_before_reading_the_challenge(server: QueueServer) -> None:
    for _ in range(50):
        reset_close(socket.create_connection(server.address, timeout=5.0))
        socket.create_connection(server.address, timeout=5.0).close()
    round_trip(server.address, server.authkey)
    wait_until(
        lambda: not server.server.connections,
        "the server kept a closed connection",
        timeout=5.0,
    )


# ---------------------------------------------------------- silent and slow peers
@pytest.mark.parametrize(
    "stage",
    ["silent", "half-header", "half-frame", "answered-only", "challenged-only"],
)
@pytest.mark.slow
def test_stalled_handshake_dropped_after_timeout(server_factory: ServerFactory, stage: str) -> None:
    timeout = 0.5
    srv = server_factory(ServerConfig(handshake_timeout=timeout))
    start = time.monotonic()
    with WireClient(srv.address) as c:
        if stage == "half-header":
            c.send_raw(b"\x00\x00")
        elif stage == "half-frame":
            c.send_raw(struct.pack("!i", 48) + b"{sha256}")
        elif stage in ("answered-only", "challenged-only"):
            c.answer_challenge(srv.authkey)
            if stage == "challenged-only":
                c.send_frame(CHALLENGE + b"{sha256}" + os.urandom(40))
        c.wait_closed(timeout + 3.0)
        elapsed = time.monotonic() - start
    assert elapsed >= timeout - 0.05, f"dropped after {elapsed:.3f}s, before the timeout"
    round_trip(srv.address, srv.authkey)


@pytest.mark.slow
def test_authenticated_idle_client_is_not_dropped(server_factory: ServerFactory) -> None:
    """handshake_timeout covers the handshake only, not a quiet authenticated client."""
    timeout = 0.3
    srv = server_factory(ServerConfig(handshake_timeout=timeout))
    with WireClient(srv.address) as c:
        c.handshake(srv.authkey)
        c.sock.settimeout(3 * timeout)
        with pytest.raises(TimeoutError):
            c.sock.recv(1)  # nothing comes: no close, no data
        assert c.call(None, "number_of_objects") == 0
    round_trip(srv.address, srv.authkey)


@pytest.mark.slow
def test_many_silent_peers_all_dropped(server_factory: ServerFactory) -> None:
    timeout = 0.5
    srv = server_factory(ServerConfig(handshake_timeout=timeout))
    peers = []
    try:
        for _ in range(100):
            peers.append(WireClient(srv.address))
        for peer in peers:
            peer.wait_closed(timeout + 5.0)
    finally:
        for peer in peers:
            peer.close()
    round_trip(srv.address, srv.authkey)


@pytest.mark.slow
def test_thousand_idle_peers_do_not_delay_a_client(
    server_factory: ServerFactory, many_fds: int
) -> None:
    n = 1000
    if many_fds < 2 * n + 200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {many_fds} is too low for {n} peers")
    # Caps above n: this is about a thousand peers kept at once (test_peer_bounds.py
    # has what happens past the caps).
    srv = server_factory(
        ServerConfig(handshake_timeout=30.0, max_handshaking=2 * n, max_handshaking_per_peer=2 * n)
    )
    peers: list[socket.socket] = []
    try:
        # In batches below the listen backlog (128): a full accept queue makes the
        # kernel drop SYNs, and the 1 s SYN retransmit would only slow the test down.
        while len(peers) < n:
            for _ in range(min(64, n - len(peers))):
                peers.append(socket.create_connection(srv.address, timeout=10.0))
            wait_until(
                lambda: len(srv.server.connections) >= len(peers),
                "peers were not accepted",
                timeout=5.0,
            )
        elapsed = round_trip(srv.address, srv.authkey, deadline=2.0)
        # All of them were accepted (each got its challenge) and are still connected.
        for sock in peers:
            sock.settimeout(5.0)
            header = sock.recv(4, socket.MSG_WAITALL)
            (size,) = struct.unpack("!i", header)
            assert sock.recv(size, socket.MSG_WAITALL).startswith(CHALLENGE)
        for sock in peers:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1, socket.MSG_DONTWAIT)  # neither data nor EOF: still open
        assert len(srv.server.connections) >= n
        round_trip(srv.address, srv.authkey, deadline=2.0)
    finally:
        for sock in peers:
            sock.close()
    assert elapsed < 2.0
    wait_until(lambda: not srv.server.connections, "closed peers were not released", timeout=10.0)


def test_peer_vanishing_mid_handshake_does_not_stop_others(server: QueueServer) -> None:
    """Interleave: a good handshake in progress while bad peers come and go."""
    good = WireClient(server.address)
    try:
        good.answer_challenge(server.authkey)
        for _ in range(10):
            with WireClient(server.address) as bad:
                bad.recv_challenge()
                bad.send_raw(struct.pack("!i", 1000))
                bad.wait_closed(PROMPT)
        good.deliver_challenge(server.authkey)
        assert good.call(None, "number_of_objects") == 0
    finally:
        good.close()
    # A one-shot connection is closed after its single reply.
    with pytest.raises(PeerClosed), WireClient(server.address) as c:
        c.handshake(server.authkey)
        c.call(None, "dummy")
        c.call(None, "dummy")
    round_trip(server.address, server.authkey)
