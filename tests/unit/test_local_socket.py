"""Same-host native clients move from loopback TCP to the server's Unix socket.

See :mod:`distproc.wire.same_host`.  Real servers on port 0, real sockets.
"""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from shared_fixtures import AUTHKEY, ServeFn, serve_in_thread, wait_until

import distproc.aio
from distproc.client.connection import Client, dispatch
from distproc.client.mux_cache import close_multiplexers
from distproc.errors import AuthenticationError, ConnectionLostError
from distproc.managers import BaseManager
from distproc.server import ServerConfig
from distproc.wire import handshake, same_host
from distproc.wire.framing import recv_frame

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract Unix sockets are Linux's"
)


class QM(BaseManager):
    pass


QM.register("Queue", queue.Queue)


@pytest.fixture(autouse=True)
def _fresh_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(same_host.ENV, raising=False)
    close_multiplexers()
    yield
    close_multiplexers()


def _server_flags(address: Any, family: int = socket.AF_INET) -> int | None:
    """The upgrade flags in the server's challenge to a fresh connection from here."""
    with socket.socket(family) as sock:
        sock.connect(address)
        challenge = recv_frame(sock, 256)
    assert challenge.startswith(handshake.CHALLENGE)
    return handshake.read_marker(challenge[len(handshake.CHALLENGE) :])


def _family_of(proxy: Any) -> int:
    mux = proxy._native()
    assert mux is not None
    return int(mux.sock.family)


def test_a_native_client_on_this_host_moves_to_the_unix_socket(serve: ServeFn) -> None:
    server, client = serve(QM)
    assert server.local_address is not None and server.local_address.startswith("\0")
    q: Any = client.Queue()
    mux = q._native()
    assert mux.sock.family == socket.AF_UNIX
    assert mux.sock.getpeername() == server.local_address.encode()
    q.put([1, "two"])
    assert q.get() == [1, "two"]
    # The TCP connection it came by is gone by the time the move is done.
    [conn] = server.connections
    assert conn.protocol == "native" and conn.peer == f"local process {os.getpid()}"


def test_a_client_waiting_in_the_backlog_is_offered_it_too() -> None:
    """A client may connect before ``serve()`` runs (the socket listens from the
    start): the Unix socket must be ready before the first TCP accept."""
    server = QM(address=("127.0.0.1", 0), authkey=AUTHKEY).get_server()
    with socket.create_connection(server.address, timeout=10) as early:
        running = serve_in_thread(server)
        try:
            challenge = recv_frame(early, 256)
            flags = handshake.read_marker(challenge[len(handshake.CHALLENGE) :])
            assert flags is not None and flags & handshake.FLAG_LOCAL
        finally:
            running.stop()


@pytest.mark.parametrize(("server", "client"), [("pickle", "native"), ("native", "native")])
def test_native_serializers_move_too(serve: ServeFn, server: str, client: str) -> None:
    srv, _ = serve(QM, serializer=server)
    manager = QM(address=srv.address, authkey=AUTHKEY, serializer=client)
    manager.connect()
    q: Any = manager.Queue()  # type: ignore[attr-defined]
    assert _family_of(q) == socket.AF_UNIX
    q.put({"a": (1, 2)})
    assert q.get() == {"a": (1, 2)}


def test_the_asyncio_client_moves_too(serve: ServeFn) -> None:
    server, _ = serve(QM)

    async def main() -> tuple[int, Any, int]:
        manager = await distproc.aio.connect(server.address, AUTHKEY, QM)
        try:
            q = await manager.Queue()
            await q.put("x")
            family = manager._stream.writer.get_extra_info("socket").family
            return family, await q.get(), len(server.connections)
        finally:
            await manager.aclose()

    # The TCP connection it came by is gone by the time connect() returns.
    assert asyncio.run(main()) == (socket.AF_UNIX, "x", 2)  # and the fixture's client


def _state(pid: int) -> str:
    """The process's state letter from /proc (``T``: stopped)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize("family", [socket.AF_UNIX, socket.AF_INET])
def test_a_server_killed_under_a_waiting_get_is_noticed(
    family: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``kill -9`` of the server process: a get() waiting on its socket gets
    ConnectionLostError at once (the kernel ends the socket), not a hang and
    not the bare ConnectionResetError of a socket that had unread bytes."""
    if family == socket.AF_INET:
        monkeypatch.setenv(same_host.ENV, "0")  # the server process inherits it
    manager = QM(address=("127.0.0.1", 0), authkey=AUTHKEY)
    manager.start()
    try:
        q: Any = manager.Queue()  # type: ignore[attr-defined]
        mux = q._native()
        assert mux.sock.family == family
        outcome: list[BaseException] = []
        done = threading.Event()

        def wait() -> None:
            try:
                q.get()
            except BaseException as exc:
                outcome.append(exc)
            done.set()

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        wait_until(lambda: mux._slots, "the get() was never sent")  # it waits for its reply
        process = manager._process
        # Stopped, the server cannot read the put below: it dies with bytes
        # unread, and the kernel resets the connection instead of ending it.
        os.kill(process.pid, signal.SIGSTOP)
        wait_until(lambda: _state(process.pid) == "T", "the server did not stop")  # stopped
        q.put("never read")  # an unbounded queue's put does not wait for its reply
        os.kill(process.pid, signal.SIGKILL)
        assert done.wait(5), "the waiting get() did not notice the server's death"
        assert len(outcome) == 1 and isinstance(outcome[0], ConnectionLostError), outcome
        process.join(5)
    finally:
        close_multiplexers()


def test_the_unix_socket_asks_for_the_authkey(serve: ServeFn) -> None:
    server, _ = serve(QM)
    with pytest.raises(AuthenticationError):
        Client(server.local_address, b"not-the-key", timeout=10)
    # With the key, it serves the stdlib's protocol as the TCP socket does.
    with Client(server.local_address, AUTHKEY) as conn:
        assert dispatch(conn, None, "number_of_objects") == 0


def test_offered_only_to_loopback_peers(serve: ServeFn) -> None:
    server, _ = serve(QM)
    flags = _server_flags(server.address)
    assert flags is not None and flags & handshake.FLAG_LOCAL
    # Over the Unix socket itself there is nothing more to offer.
    flags = _server_flags(server.local_address, socket.AF_UNIX)
    assert flags is not None and not flags & handshake.FLAG_LOCAL


#: Run in a network namespace of its own, where ``lo`` also has 198.18.0.1: an
#: address of this host that is not a loopback address.
_OFF_LOOPBACK = """
import queue, socket, threading
from distproc.managers import BaseManager
from distproc.wire import handshake
from distproc.wire.framing import recv_frame

class QM(BaseManager):
    pass

QM.register("Queue", queue.Queue)
server = QM(address=("198.18.0.1", 0), authkey=b"k").get_server()
threading.Thread(target=server.serve, daemon=True).start()
assert server.started.wait(10)
with socket.create_connection(server.address) as sock:
    challenge = recv_frame(sock, 256)
flags = handshake.read_marker(challenge[len(handshake.CHALLENGE):])
client = QM(address=server.address, authkey=b"k")
client.connect()
q = client.Queue()
q.put(5)
print("offered", bool(flags & handshake.FLAG_LOCAL), "family", q._native().sock.family.name,
      "got", q.get(), "local", server.local_address is not None)
server.stop()
"""


def test_not_offered_off_loopback() -> None:
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if os.geteuid() != 0 or unshare is None or ip is None:
        pytest.skip("needs a network namespace of its own (root, unshare, ip)")
    setup = f'{ip} link set lo up && {ip} addr add 198.18.0.1/32 dev lo && exec "$0" "$@"'
    run = subprocess.run(
        [unshare, "--net", "sh", "-c", setup, sys.executable, "-c", _OFF_LOOPBACK],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if run.returncode != 0 and "Operation not permitted" in run.stderr:
        pytest.skip(f"no network namespace here: {run.stderr.strip()}")
    assert run.returncode == 0, run.stderr
    # The server listens on a Unix socket, but offers it to nobody off loopback.
    assert run.stdout.split() == [
        "offered",
        "False",
        "family",
        "AF_INET",
        "got",
        "5",
        "local",
        "True",
    ]


def test_turned_off_on_either_side(serve: ServeFn, monkeypatch: pytest.MonkeyPatch) -> None:
    server, client = serve(QM, config=ServerConfig(local_socket=False))
    assert server.local_address is None
    flags = _server_flags(server.address)
    assert flags is not None and not flags & handshake.FLAG_LOCAL
    assert _family_of(client.Queue()) == socket.AF_INET

    offering, other = serve(QM)
    assert offering.local_address is not None
    monkeypatch.setenv(same_host.ENV, "0")
    close_multiplexers()  # connect() may have opened one already
    assert _family_of(other.Queue()) == socket.AF_INET


def test_a_name_that_is_not_on_this_host_keeps_tcp(serve: ServeFn) -> None:
    """As behind a tunnel (``ssh -L``): loopback both ways, but another host's name."""
    server, client = serve(QM)
    server.local_address = same_host.new_name()  # nothing listens there
    close_multiplexers()  # connect() may have opened one already
    q: Any = client.Queue()
    assert _family_of(q) == socket.AF_INET
    q.put(3)
    assert q.get() == 3
    [conn] = server.connections
    assert conn.protocol == "native"


def test_the_asyncio_client_keeps_tcp_when_the_name_is_not_on_this_host(
    serve: ServeFn,
) -> None:
    server, _ = serve(QM)
    server.local_address = same_host.new_name()  # nothing listens there

    async def main() -> tuple[int, Any]:
        manager = await distproc.aio.connect(server.address, AUTHKEY, QM)
        try:
            q = await manager.Queue()
            await q.put("x")
            return manager._stream.writer.get_extra_info("socket").family, await q.get()
        finally:
            await manager.aclose()

    assert asyncio.run(main()) == (socket.AF_INET, "x")
