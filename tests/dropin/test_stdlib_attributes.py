"""The stdlib's attributes that programs and CPython's tests touch, with the stdlib's meaning.

Each test runs twice, the same code each time: on the stdlib's
``multiprocessing.managers`` and on ``distproc.managers``, so what it checks
is what the stdlib does, not what distproc thinks it should do.
"""

from __future__ import annotations

import gc
import multiprocessing
import queue
import socket
import sys
import threading
import weakref
from multiprocessing import util
from types import ModuleType
from typing import Any

import pytest
from shared_fixtures import AUTHKEY, wait_until

import distproc.managers
from distproc import dropin

SIDES = {"stdlib": dropin.STDLIB_MANAGERS, "distproc": distproc.managers}
FORK = multiprocessing.get_context("fork")


@pytest.fixture(params=sorted(SIDES))
def managers(request: pytest.FixtureRequest) -> ModuleType:
    """The module under test: the stdlib's or distproc's."""
    return SIDES[request.param]


@pytest.fixture
def start(managers: ModuleType, stdlib_manager: Any) -> Any:
    """``start(cls=SyncManager, address=...)``: a started manager of that module."""

    def make(cls: Any = None, address: Any = ("127.0.0.1", 0)) -> Any:
        return stdlib_manager(cls or managers.SyncManager, address)

    return make


def test_server_listener_closes_the_port_before_the_server_is_started(
    managers: ModuleType, start: Any
) -> None:
    """CPython's test_rapid_restart: a server made and not served frees its port."""
    server = managers.SyncManager(address=("127.0.0.1", 0), authkey=AUTHKEY).get_server()
    host, port = server.address
    assert (host, port) == tuple(server.listener.address)
    assert port != 0
    server.listener.close()
    with socket.socket() as sock:  # the port is free: bound and listened on again
        sock.bind((host, port))
        sock.listen()
    manager = start(address=(host, port))
    assert manager.address == (host, port)
    assert manager.list([1])[0] == 1


def test_an_error_of_a_call_is_not_kept_alive(managers: ModuleType, start: Any) -> None:
    """CPython's TestManagerExceptions (gh-106558): no cycle through the proxy's frames."""
    if managers is dropin.STDLIB_MANAGERS and sys.version_info < (3, 13):
        pytest.skip("the stdlib keeps it alive before 3.13 (gh-106558)")
    q = start().Queue()
    gc.disable()
    try:
        try:
            q.get_nowait()
        except queue.Empty as exc:
            ref = weakref.ref(exc)
        assert ref() is None
    finally:
        gc.enable()


def test_client_and_dispatch_reach_the_server(managers: ModuleType, start: Any) -> None:
    manager = start()
    held = manager.list()
    with manager._Client(manager.address, authkey=manager._authkey) as conn:
        assert managers.dispatch(conn, None, "number_of_objects") == 1
    assert manager._number_of_objects() == 1
    del held
    wait_until(lambda: manager._number_of_objects() == 0, "the list's decref")


def test_a_server_class_of_ones_own(managers: ModuleType, start: Any) -> None:
    class GreetingServer(managers.Server):  # type: ignore[name-defined,misc]
        public = [*managers.Server.public, "greet"]

        def greet(self, c: Any, name: str) -> str:
            return f"hello {name}"

    class GreetingManager(managers.BaseManager):  # type: ignore[name-defined,misc]
        _Server = GreetingServer

    manager = start(GreetingManager)  # start() serves with _Server
    with manager._Client(manager.address, authkey=manager._authkey) as conn:
        assert managers.dispatch(conn, None, "greet", ("you",)) == "hello you"


def test_registry_entries_and_their_inheritance(managers: ModuleType) -> None:
    class Base(managers.BaseManager):  # type: ignore[name-defined,misc]
        pass

    class Derived(Base):
        pass

    Base.register("made", dict, exposed=("keys",), method_to_typeid={"keys": "made"})
    Derived.register("own", list)
    assert Base._registry["made"] == (dict, ("keys",), {"keys": "made"}, managers.AutoProxy)
    assert Derived._registry["made"] == Base._registry["made"]
    assert "own" in Derived._registry
    assert "own" not in Base._registry
    assert "made" not in managers.BaseManager._registry


def test_number_of_objects_and_debug_info(start: Any) -> None:
    manager = start()
    assert manager._number_of_objects() == 0
    assert manager._debug_info() == ""
    shared = manager.list([1, 2])
    ident = shared._token.id
    assert manager._number_of_objects() == 1
    assert manager._debug_info() == f"  {ident}:       refcount=1\n    [1, 2]"


def _report_manager(proxy: Any, conn: Any) -> None:
    conn.send((proxy._manager is None, proxy[0]))


def test_token_manager_tls_and_close(start: Any) -> None:
    manager = start()
    first, second = manager.list([7]), manager.dict()
    token = first._token
    assert (token.typeid, tuple(token.address)) == ("list", tuple(manager.address))
    assert first._manager is manager
    # One thread-local of connections per server, shared by the proxies of this process.
    assert first._tls is second._tls
    assert isinstance(first._tls, util.ForkAwareLocal)
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(first._tls.__dict__.copy()))
    thread.start()
    thread.join()
    assert seen == [{}]
    # In a forked child the proxy no longer has the parent's manager.
    reader, writer = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_report_manager, args=(first, writer))
    child.start()
    assert reader.recv() == (True, 7)
    child.join()
    # _close() gives the proxy's reference back now, once.
    assert manager._number_of_objects() == 2
    second._close()
    wait_until(lambda: manager._number_of_objects() == 1, "the closed proxy's decref")
    second._close()
    assert first[0] == 7
    assert manager._number_of_objects() == 1
