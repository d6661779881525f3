"""distproc.managers behaves like multiprocessing.managers, on real servers."""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import socket
import threading
from typing import Any

import pytest
from shared_fixtures import AUTHKEY, ServeFn, serve_in_thread, wait_until

import distproc
from distproc.client.connection import Client, dispatch
from distproc.errors import RemoteError
from distproc.managers import BaseManager, BaseProxy, SyncManager


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n

    def fail(self) -> None:
        raise KeyError("no such thing")

    def child(self) -> Counter:
        return Counter()

    def unpicklable(self) -> Any:
        return threading.Lock()

    def crash(self) -> None:
        raise SystemExit(3)


class CounterManager(BaseManager):
    pass


CounterManager.register("Counter", Counter, method_to_typeid={"child": "Counter"})
CounterManager.register("Queue", queue.Queue)
CounterManager.register("Locked", Counter, exposed=("incr",))


def test_remote_exception_keeps_its_type(serve: ServeFn) -> None:
    _, client = serve(CounterManager)
    c = client.Counter()
    assert c.incr() == 1
    with pytest.raises(KeyError, match="no such thing"):
        c.fail()
    q = client.Queue()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_method_to_typeid_returns_a_proxy(serve: ServeFn) -> None:
    server, client = serve(CounterManager)
    c = client.Counter()
    made = c.child()
    assert isinstance(made, BaseProxy)
    child: Any = made
    assert child.incr() == 1 and child.incr() == 2
    assert c.incr() == 1
    assert client._number_of_objects() == 2
    del child, made
    assert client._number_of_objects() == 1
    del c
    assert client._number_of_objects() == 0
    assert len(server.table) == 0


def test_remote_errors_carry_the_traceback(serve: ServeFn) -> None:
    _, client = serve(CounterManager)
    c = client.Locked()
    with pytest.raises(RemoteError) as info:
        c._callmethod("fail")
    assert "'fail'" in str(info.value) and "not in exposed" in str(info.value)
    assert isinstance(info.value, multiprocessing.managers.RemoteError)
    # an unpicklable result is a RemoteError and the connection stays usable
    u = client.Counter()
    with pytest.raises(RemoteError, match="Unserializable"):
        u.unpicklable()
    assert u.incr() == 1
    with pytest.raises(RemoteError, match="SystemExit"):
        u.crash()
    assert u.incr() == 2


def test_unknown_typeid_is_a_remote_error(serve: ServeFn) -> None:
    server, _ = serve(CounterManager)
    with Client(server.address, AUTHKEY) as conn, pytest.raises(RemoteError, match="nope"):
        dispatch(conn, None, "create", ("nope",))


def test_sync_manager_types(serve: ServeFn) -> None:
    _, m = serve(SyncManager)
    sm: Any = m
    lst = sm.list([1, 2])
    lst += [3]
    lst *= 2
    assert lst[:] == [1, 2, 3, 1, 2, 3] and len(lst) == 6
    d = sm.dict(a=1)
    d["b"] = 2
    assert sorted(d.keys()) == ["a", "b"] and "a" in d
    assert sorted(iter(d)) == ["a", "b"]
    ns = sm.Namespace(x=1)
    ns.y = 2
    assert (ns.x, ns.y) == (1, 2)
    del ns.x
    with pytest.raises(AttributeError):
        _ = ns.x
    v = sm.Value("i", 7)
    v.value += 1
    assert v.get() == 8
    arr = sm.Array("i", [1, 2, 3])
    arr[0] = 9
    assert len(arr) == 3 and arr[0] == 9
    ev = sm.Event()
    assert not ev.wait(0.01)
    ev.set()
    assert ev.is_set() and ev.wait(1)
    for name in ("Lock", "RLock", "Semaphore", "BoundedSemaphore"):
        lock = getattr(sm, name)()
        with lock:
            pass
        assert lock.acquire(timeout=1)
        lock.release()
    cond = sm.Condition()
    with cond:
        assert cond.wait_for(lambda: True)
        cond.notify_all()
    barrier = sm.Barrier(1)
    assert barrier.wait() == 0 and barrier.parties == 1 and not barrier.broken
    jq = sm.JoinableQueue()
    jq.put(1)
    assert jq.get() == 1
    jq.task_done()
    jq.join()
    with sm.Pool(1) as pool:
        assert pool.map(abs, [-1, -2]) == [1, 2]
        assert pool.apply_async(abs, (-3,)).get(timeout=10) == 3
        assert sorted(pool.imap_unordered(abs, [-4, -5])) == [4, 5]


def test_nested_proxies(serve: ServeFn) -> None:
    _, m = serve(SyncManager)
    sm: Any = m
    outer = sm.list([sm.dict(a=1), sm.dict(b=2)])
    assert outer[0]["a"] == 1
    outer[1]["c"] = 3
    assert outer[1]._getvalue() == {"b": 2, "c": 3}
    holder = sm.dict()
    holder["q"] = sm.Queue()
    holder["q"].put("through a dict")
    assert holder["q"].get(timeout=1) == "through a dict"


def test_str_and_repr(serve: ServeFn) -> None:
    _, m = serve(SyncManager)
    d: Any = m.dict(a=1)
    assert str(d) == "{'a': 1}"
    assert repr(d).startswith("<DictProxy object, typeid 'dict' at 0x")


def _child_uses_proxy(d: Any, q: Any) -> None:
    d["child"] = True
    q.put("from child")


def test_proxies_pickle_into_another_process(serve: ServeFn) -> None:
    _, m = serve(SyncManager)
    sm: Any = m
    d, q = sm.dict(), sm.Queue()
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_child_uses_proxy, args=(d, q))
    p.start()
    assert q.get(timeout=30) == "from child"
    p.join(30)
    assert p.exitcode == 0 and d["child"] is True


def test_xmlrpclib_serializer(serve: ServeFn) -> None:
    class XM(BaseManager):
        pass

    XM.register("Queue", queue.Queue)
    XM.register("dict", dict)
    server = XM(address=("127.0.0.1", 0), authkey=AUTHKEY, serializer="xmlrpclib").get_server()
    running = serve_in_thread(server)
    try:
        client = XM(address=server.address, authkey=AUTHKEY, serializer="xmlrpclib")
        client.connect()
        q: Any = client.Queue()  # type: ignore[attr-defined]
        q.put((1, "two"))
        assert q.get() == [1, "two"]  # xmlrpc has no tuples
        del q
    finally:
        running.stop()


def test_str_authkey_is_utf8(serve: ServeFn) -> None:
    server, _ = serve(CounterManager)
    text = CounterManager(address=server.address, authkey=AUTHKEY.decode())
    text.connect()
    assert text.Counter().incr() == 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="bytes"):
        CounterManager(authkey=123)  # type: ignore[arg-type]


def test_start_shutdown_and_context_manager() -> None:
    with SyncManager() as m:
        assert m.address is not None
        d: Any = m.dict()  # type: ignore[attr-defined]
        d["k"] = "v"
        assert d["k"] == "v"
    m.shutdown()  # again: harmless
    assert m._state.value == 2
    with pytest.raises(multiprocessing.ProcessError):
        m.start()


def test_manager_function() -> None:
    m = distproc.Manager()
    try:
        assert m.list([1])[0] == 1
    finally:
        m.shutdown()
    m.join(5)


def test_connections_use_nodelay(serve: ServeFn) -> None:
    server, _ = serve(CounterManager)
    with Client(server.address, AUTHKEY) as conn:
        sock = socket.socket(fileno=conn.fileno())
        try:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            sock.detach()


def test_blocked_getters_hold_no_threads(serve: ServeFn) -> None:
    server, client = serve(CounterManager)
    q: Any = client.Queue()
    threads_before = server.pool._started
    conns = []
    try:
        for _ in range(50):
            conn = Client(server.address, AUTHKEY)
            conns.append(conn)
            dispatch(conn, None, "accept_connection", ("getter",))
            conn.send((q._id, "get", (), {}))
        q.qsize()  # a round trip after the 50 gets: they are all parked by now
        assert server.pool._started == threads_before  # no thread was needed
        for i in range(50):
            q.put(i)
        got = sorted(conn.recv()[1] for conn in conns)
        assert got == list(range(50))
    finally:
        for conn in conns:
            conn.close()


def test_dead_getter_does_not_eat_items(serve: ServeFn) -> None:
    server, client = serve(CounterManager)
    q: Any = client.Queue()
    conn = Client(server.address, AUTHKEY)
    dispatch(conn, None, "accept_connection", ("doomed",))
    conn.send((q._id, "get", (), {}))
    q.qsize()  # the get is parked
    conn.close()
    q.qsize()  # and the server has seen the close
    q.put("precious")
    assert q.get(timeout=5) == "precious"


def test_stdlib_pickles_of_our_proxies(serve: ServeFn) -> None:
    _, m = serve(SyncManager)
    d: Any = m.dict()
    from distproc.wire.codecs import PickleCodec

    data = PickleCodec().dumps(d)
    assert b"distproc" not in data and b"multiprocessing.managers" in data
    assert b"DictProxy" in data and b"RebuildProxy" in data
    # pickled for a child process (not the wire), distproc's own classes are named
    assert b"distproc.proxies" in pickle.dumps(d)


_DEFAULT_FORKSERVER = """
import multiprocessing, queue
from distproc.managers import BaseManager
q = queue.Queue()
class QM(BaseManager):
    pass
QM.register("get_q", callable=lambda: q)
m = QM(address=("127.0.0.1", 0), authkey=b"k")
m._ctx = multiprocessing.get_context("forkserver")  # what Python 3.14 has by default
m.start()
p = m.get_q()
p.put(41)
print(p.get() + 1)
m.shutdown()
"""


def test_lambda_registry_falls_back_to_fork_when_no_method_was_chosen() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _DEFAULT_FORKSERVER],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"


class _ExitOnLoad:
    def __reduce__(self) -> tuple[Any, ...]:
        import sys

        return sys.exit, (3,)


def test_systemexit_while_unpickling_does_not_stop_the_server(serve: ServeFn) -> None:
    server, client = serve(CounterManager)
    with Client(server.address, AUTHKEY) as conn:
        dispatch(conn, None, "accept_connection", ("evil",))
        conn.send_bytes(pickle.dumps(_ExitOnLoad()))
        kind, text = conn.recv()
        assert kind == "#TRACEBACK" and "SystemExit" in text
    assert client.Counter().incr() == 1


def _wait_for_waiters(cond: Any, n: int) -> None:
    """Until ``n`` threads wait on ``cond``."""
    wait_until(lambda: len(cond._waiters) >= n, "the thread never started waiting")


def test_served_queues_still_wake_threads_of_the_server_process(serve: ServeFn) -> None:
    """The loop serves gets and puts without queue.Queue's own methods: threads
    of the server's process blocked on the queue must still be woken, whether
    they began to wait before the loop took the queue over or after."""
    shared: queue.Queue[Any] = queue.Queue()
    bounded: queue.Queue[Any] = queue.Queue(maxsize=1)

    class M(BaseManager):
        pass

    M.register("shared", callable=lambda: shared)
    M.register("bounded", callable=lambda: bounded)
    _, client = serve(M)
    got: list[Any] = []
    # Each blocked thread would still return at its timeout, woken or not: the
    # joins give up long before that, so a missed wake-up fails the test.
    early = threading.Thread(target=lambda: got.append(shared.get(timeout=60)), daemon=True)
    early.start()
    _wait_for_waiters(shared.not_empty, 1)  # waits on queue.Queue's own condition
    q: Any = client.shared()
    q.qsize()  # the loop has taken the queue over
    late = threading.Thread(target=lambda: got.append(shared.get(timeout=60)), daemon=True)
    late.start()
    _wait_for_waiters(shared.not_empty, 1)  # the loop's condition
    q.put("a")
    q.put("b")
    early.join(5)
    late.join(5)
    assert sorted(got) == ["a", "b"]

    # a client parked in get() is served an item that a server thread puts directly
    assert q.qsize() == 0
    waiter = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
    waiter.start()
    lq: Any = shared._distproc_waiters  # type: ignore[attr-defined]  # set by the server
    wait_until(lambda: lq.getters, "the client's get() was never parked")
    shared.put("c")
    waiter.join(10)
    assert got[-1] == "c"

    # a server thread blocked in put() on a full queue is released by a client's get
    b: Any = client.bounded()
    b.put(1)
    putter = threading.Thread(target=lambda: bounded.put(2, timeout=60), daemon=True)
    putter.start()
    _wait_for_waiters(bounded.not_full, 1)
    assert b.get(timeout=5) == 1
    putter.join(5)
    assert not putter.is_alive()
    assert b.get(timeout=5) == 2
