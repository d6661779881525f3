"""The same faults seen through the manager API: BaseManager, proxies, shutdown().

Servers come from ``BaseManager.get_server()`` run in a thread (``serve()``,
not ``serve_forever()``, which exits the process), or from
``BaseManager.start()`` where a real server process must go away.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from shared_fixtures import AUTHKEY, wait_until

from distproc.client.connection import Client, dispatch
from distproc.errors import AuthenticationError, ConnectionLostError, RemoteError
from distproc.managers import BaseManager
from distproc.server import ServerConfig

from ._objects import IMPORT_ROOT, THING_EXPOSED, StartedManager, Thing, waiting_getters
from ._support import QueueServer, start_server_thread
from ._wire import WireClient, round_trip

PROMPT = 2.0
TYPEIDS = ("Queue", "get_queue", "Thing")

ManagerServerFactory = Callable[..., QueueServer]


def _server_manager_class() -> type[BaseManager]:
    class ServerSide(BaseManager):
        pass

    ServerSide.register("Queue", queue.Queue)
    ServerSide.register("Thing", Thing, exposed=THING_EXPOSED)
    return ServerSide


@pytest.fixture
def manager_server() -> Iterator[ManagerServerFactory]:
    """``make(authkey=AUTHKEY, config=None)``: a manager's server, served in a thread."""
    running: list[QueueServer] = []

    def make(authkey: bytes | str = AUTHKEY, config: ServerConfig | None = None) -> QueueServer:
        cls = _server_manager_class()
        shared: queue.Queue[Any] = queue.Queue()

        def get_queue() -> queue.Queue[Any]:
            return shared

        cls.register("get_queue", get_queue)
        manager = cls(address=("127.0.0.1", 0), authkey=authkey, config=config)
        server = manager.get_server()
        srv = start_server_thread(server, shared)
        running.append(srv)
        return srv

    yield make
    for srv in running:
        srv.stop()


def connect(address: Any, authkey: bytes | str, *typeids: str) -> BaseManager:
    """A connected client manager with ``typeids`` registered (no callables)."""

    class ClientSide(BaseManager):
        pass

    for typeid in typeids or TYPEIDS:
        ClientSide.register(typeid)
    manager = ClientSide(address=address, authkey=authkey)
    manager.connect()
    return manager


def new(manager: BaseManager, typeid: str, *args: Any) -> Any:
    """``manager.<typeid>(*args)``: the create method that ``register()`` added."""
    return getattr(manager, typeid)(*args)


def proxy_round_trip(address: Any, authkey: bytes | str, deadline: float = PROMPT) -> None:
    """connect() + a new queue proxy + put/get, within ``deadline`` seconds."""
    start = time.monotonic()
    manager = connect(address, authkey)
    q = new(manager, "Queue")
    q.put("through-a-proxy")
    assert q.get() == "through-a-proxy"
    del q
    gc.collect()
    elapsed = time.monotonic() - start
    assert elapsed < deadline, f"a proxy round trip took {elapsed:.2f}s"


# -------------------------------------------------------------------- authkeys
def test_wrong_authkey_connect(
    manager_server: ManagerServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="distproc.server")
    srv = manager_server()
    with pytest.raises(multiprocessing.AuthenticationError) as info:
        connect(srv.address, b"the-wrong-key")
    assert isinstance(info.value, AuthenticationError)
    proxy_round_trip(srv.address, AUTHKEY)
    warnings = [
        r for r in caplog.records if r.name == "distproc.server" and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "\n" not in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("server_key", "client_key"),
    [
        ("abc", b"abc"),
        (b"abc", "abc"),
        ("abc", "abc"),
        ("clé-ünïcode", "clé-ünïcode".encode()),
        ("clé-ünïcode".encode(), "clé-ünïcode"),
    ],
)
def test_str_authkey_is_utf8(
    manager_server: ManagerServerFactory, server_key: bytes | str, client_key: bytes | str
) -> None:
    srv = manager_server(authkey=server_key)
    expected = server_key.encode("utf-8") if isinstance(server_key, str) else server_key
    assert srv.server.authkey == expected
    proxy_round_trip(srv.address, client_key)
    # The raw protocol agrees: the key on the wire is the UTF-8 bytes.
    round_trip(srv.address, expected)
    with pytest.raises(multiprocessing.AuthenticationError):
        connect(srv.address, "abc" if expected != b"abc" else "ab\u00e7")


def test_str_authkey_wrong_encoding_refused(manager_server: ManagerServerFactory) -> None:
    """UTF-8 exactly: the Latin-1 bytes of the same text are another key."""
    srv = manager_server(authkey="clé")
    with pytest.raises(multiprocessing.AuthenticationError):
        connect(srv.address, "clé".encode("latin-1"))
    proxy_round_trip(srv.address, "clé")


# --------------------------------------------------------------- remote errors
def test_unknown_typeid_via_manager(manager_server: ManagerServerFactory) -> None:
    srv = manager_server()
    manager = connect(srv.address, AUTHKEY, "NotOnTheServer", "Queue")
    with pytest.raises(RemoteError) as info:
        new(manager, "NotOnTheServer")
    assert "NotOnTheServer" in str(info.value)
    proxy_round_trip(srv.address, AUTHKEY)


@pytest.mark.parametrize("methodname", ["hidden", "_private", "no_such_method"])
def test_method_not_exposed_via_proxy(
    manager_server: ManagerServerFactory, methodname: str
) -> None:
    srv = manager_server()
    thing = new(connect(srv.address, AUTHKEY), "Thing")
    assert not hasattr(thing, "hidden")
    with pytest.raises(RemoteError) as info:
        thing._callmethod(methodname)
    assert methodname in str(info.value)
    assert thing.ok(5) == 5  # the same proxy, the same connection
    del thing
    gc.collect()
    proxy_round_trip(srv.address, AUTHKEY)


@pytest.mark.parametrize("methodname", ["make_lambda", "make_lock", "raise_unpicklable"])
def test_unpicklable_result_via_proxy(
    manager_server: ManagerServerFactory, methodname: str
) -> None:
    srv = manager_server()
    thing = new(connect(srv.address, AUTHKEY), "Thing")
    for _ in range(3):
        with pytest.raises(RemoteError):
            getattr(thing, methodname)()
        assert thing.ok("next") == "next"
    with pytest.raises(ValueError, match="refuses to be unpickled"):
        thing.make_unloadable()
    assert thing.ok("after") == "after"
    del thing
    gc.collect()
    proxy_round_trip(srv.address, AUTHKEY)


# ------------------------------------------------------------------ bad peers
def test_proxies_keep_working_next_to_bad_peers(manager_server: ManagerServerFactory) -> None:
    srv = manager_server(config=ServerConfig(max_frame=1 << 20, handshake_timeout=0.5))
    q = new(connect(srv.address, AUTHKEY), "Queue")
    q.put("first")
    peers = [WireClient(srv.address) for _ in range(50)]  # silent
    try:
        with WireClient(srv.address) as big:
            big.handshake(srv.authkey)
            big.send_raw((2 << 20).to_bytes(4, "big"))
            big.wait_closed(PROMPT)
        with WireClient(srv.address) as junk:
            junk.recv_challenge()
            junk.send_raw(b"\x00\x00\x00\x05junk!")
            junk.wait_closed(PROMPT)
        start = time.monotonic()
        assert q.get() == "first"
        q.put(b"x" * 500_000)
        assert len(q.get()) == 500_000
        assert time.monotonic() - start < PROMPT
        for peer in peers:
            peer.wait_closed(5.0)  # dropped by the 0.5 s handshake timeout
    finally:
        for peer in peers:
            peer.close()
    assert q.qsize() == 0
    del q
    gc.collect()


def test_proxy_call_over_max_frame_then_next_call_works(
    manager_server: ManagerServerFactory,
) -> None:
    """The server drops the connection of a too-big call; the proxy reconnects for the next."""
    srv = manager_server(config=ServerConfig(max_frame=1 << 20))
    q = new(connect(srv.address, AUTHKEY), "Queue")
    q.put("small")
    with pytest.raises(ConnectionError):
        q.put(b"x" * (2 << 20))
    assert q.qsize() == 1
    assert q.get() == "small"
    q.put(b"y" * ((1 << 20) - 1000))  # just under the limit
    assert len(q.get()) == (1 << 20) - 1000


def test_client_thread_exit_does_not_leak_its_socket(
    manager_server: ManagerServerFactory,
) -> None:
    """A thread that used a proxy and ends: its connection is closed, not left to the GC.

    (The stdlib's Connection closes its fd in ``__del__``; a socket.socket that
    is collected open raises ResourceWarning, an error in this test suite.)
    """
    srv = manager_server()
    q = new(connect(srv.address, AUTHKEY), "Queue")
    q.put("from-main")

    def worker() -> None:
        assert q.get() == "from-main"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(10.0)
        gc.collect()
    assert not thread.is_alive()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks
    assert q.qsize() == 0


# ------------------------------------------------- the server goes away in get()
class _ProxyGetter:
    """A thread blocked in ``proxy.get()``; records what it raised."""

    def __init__(self, q: Any) -> None:
        self.q = q
        self.error: BaseException | None = None
        self.connected = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.q.qsize()  # this thread's connection exists before get() is sent
            self.connected.set()
            self.q.get()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


def _check_getters_told(getters: list[_ProxyGetter], start: float) -> None:
    for g in getters:
        assert g.done.wait(PROMPT), "a proxy blocked in get() was not told that the server left"
    assert time.monotonic() - start < PROMPT
    for g in getters:
        g.thread.join(5.0)
        assert isinstance(g.error, ConnectionLostError), repr(g.error)
        assert isinstance(g.error, ConnectionError)


def test_server_stop_while_proxies_wait_in_get(manager_server: ManagerServerFactory) -> None:
    srv = manager_server()
    q = new(connect(srv.address, AUTHKEY), "get_queue")
    getters = [_ProxyGetter(q) for _ in range(3)]
    try:
        for g in getters:
            assert g.connected.wait(5.0)
        wait_until(
            lambda: waiting_getters(srv.shared_queue) == 3,
            "getters not waiting",
            timeout=5.0,
        )
        start = time.monotonic()
        srv.server.stop()
        _check_getters_told(getters, start)
    finally:
        srv.server.stop()
        for g in getters:
            g.thread.join(5.0)
    srv.thread.join(10.0)
    assert not srv.thread.is_alive()
    del q, getters
    gc.collect()


def _started_manager(
    monkeypatch: pytest.MonkeyPatch, config: ServerConfig | None = None
) -> BaseManager:
    """A StartedManager whose server is a spawned process (no fork of a threaded pytest)."""
    monkeypatch.syspath_prepend(str(IMPORT_ROOT))  # so the child can import this package
    manager = StartedManager(
        address=("127.0.0.1", 0),
        authkey=AUTHKEY,
        ctx=multiprocessing.get_context("spawn"),
        config=config,
    )
    manager.start()
    return manager


def test_manager_shutdown_while_proxies_wait_in_get(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = _started_manager(monkeypatch)
    try:
        q = new(manager, "get_server_queue")
        probe = new(manager, "Probe")
        getters = [_ProxyGetter(q) for _ in range(3)]
        for g in getters:
            assert g.connected.wait(5.0)
        wait_until(lambda: probe.getters() == 3, "getters not waiting in the server", timeout=5.0)
        start = time.monotonic()
        manager.shutdown()
        _check_getters_told(getters, start)
        assert time.monotonic() - start < PROMPT
    finally:
        manager.shutdown()
    process = manager._process
    assert process is None or not process.is_alive()


def test_shutdown_request_from_a_client_while_proxies_wait(
    manager_server: ManagerServerFactory,
) -> None:
    """What ``manager.shutdown()`` sends, sent to a server in a thread."""
    srv = manager_server()
    q = new(connect(srv.address, AUTHKEY), "get_queue")
    getters = [_ProxyGetter(q) for _ in range(3)]
    try:
        for g in getters:
            assert g.connected.wait(5.0)
        wait_until(
            lambda: waiting_getters(srv.shared_queue) == 3,
            "getters not waiting",
            timeout=5.0,
        )
        start = time.monotonic()
        with Client(srv.address, srv.authkey, timeout=5.0) as conn:
            dispatch(conn, None, "shutdown")
        _check_getters_told(getters, start)
    finally:
        srv.server.stop()
        for g in getters:
            g.thread.join(5.0)
    srv.thread.join(10.0)
    assert not srv.thread.is_alive()
    del q, getters
    gc.collect()
