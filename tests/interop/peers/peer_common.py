"""What both ends of the interop tests agree on; standard library only.

Imported by the stdlib peer scripts (run by CPython 3.8 to 3.13), by the
distproc server script, and by the tests themselves (the distproc client runs
:func:`run_scenario` in the test process).  Everything here must parse and run
on Python 3.8: no ``X | Y``, no builtin generics in annotations, no ``match``.

The typeids:

* ``get_queue``: a module-level function that returns one module-level
  ``queue.Queue`` (the classic "remote queue" recipe of the stdlib docs);
* ``Dict``: a new ``dict`` per call, with ``DictProxy``;
* ``Calc``: an object whose ``make_counter`` result comes back as a proxy of
  typeid ``Counter`` through ``method_to_typeid``; ``divide`` and ``fail``
  raise, ``_secret`` is not exposed.
"""

import gc
import json
import operator
import queue
import sys
import threading
import time
from functools import partial
from multiprocessing import connection as mp_connection, managers as mp_managers
from typing import Any, Callable, Dict, List, Optional, Type

HOST = "127.0.0.1"
#: The line a server script prints when it is ready: ``PORT <number>``.
READY_PREFIX = "PORT "
#: The line a client script prints last: ``RESULT <json>``.
RESULT_PREFIX = "RESULT "

_the_queue: "queue.Queue[Any]" = queue.Queue()


def get_queue() -> "queue.Queue[Any]":
    """The shared queue (a module-level function, as in the stdlib docs)."""
    return _the_queue


class Counter:
    """Reaches the client only as a proxy, through ``Calc.make_counter``."""

    def __init__(self, start: int) -> None:
        self._value = start

    def increment(self) -> int:
        self._value += 1
        return self._value

    def value(self) -> int:
        return self._value


class Calc:
    def __init__(self, base: int) -> None:
        self.base = base

    def add(self, x: int) -> int:
        return self.base + x

    def divide(self, x: int, y: int) -> float:
        return x / y

    def fail(self, message: str) -> None:
        raise ValueError(message)

    def make_counter(self, start: int) -> Counter:
        return Counter(start)

    def _secret(self) -> str:
        return "not exposed"


def register_server_typeids(manager_cls: Any, dict_proxy: Any) -> None:
    """Register the server side of every typeid on ``manager_cls``."""
    manager_cls.register("get_queue", callable=get_queue)
    manager_cls.register("Dict", callable=dict, proxytype=dict_proxy)
    manager_cls.register("Calc", callable=Calc, method_to_typeid={"make_counter": "Counter"})
    manager_cls.register("Counter", create_method=False)


def register_client_typeids(manager_cls: Any, dict_proxy: Any) -> None:
    """Register the client side of every typeid on ``manager_cls``."""
    manager_cls.register("get_queue")
    manager_cls.register("Dict", proxytype=dict_proxy)
    manager_cls.register("Calc")
    manager_cls.register("Counter", create_method=False)


# ---------------------------------------------------------------- handshakes
def describe(message: bytes) -> str:
    """A handshake frame in short: ``raw16``, ``{sha256}+40``, ``#WELCOME#``..."""
    for marker in (b"#WELCOME#", b"#FAILURE#"):
        if message == marker:
            return marker.decode("ascii")
    if message.startswith(b"#CHALLENGE#"):
        message = message[len(b"#CHALLENGE#") :]
    if len(message) in (16, 20):
        # Legacy by length, as the stdlib decides: a random HMAC-MD5 answer
        # starts with "{" and holds a "}" about once in 4,400 handshakes.
        return f"raw{len(message)}"
    if message.startswith(b"{") and b"}" in message[:20]:
        end = message.index(b"}")
        name = message[: end + 1].decode("ascii", "replace")
        return f"{name}+{len(message) - end - 1}"
    return f"raw{len(message)}"


class _Tap:
    """Wraps a connection during one half of the handshake and records its frames."""

    def __init__(self, conn: Any, frames: List[Any]) -> None:
        self._conn = conn
        self._frames = frames

    def send_bytes(self, buf: Any, *args: Any) -> None:
        self._frames.append(("sent", bytes(buf)))
        self._conn.send_bytes(buf, *args)

    def recv_bytes(self, *args: Any) -> bytes:
        data: bytes = self._conn.recv_bytes(*args)
        self._frames.append(("received", data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def install_handshake_tap(sink: Callable[[Dict[str, str]], None]) -> None:
    """Record every handshake this process takes part in.

    Wraps ``multiprocessing.connection.answer_challenge`` and
    ``deliver_challenge`` (looked up as module globals by ``Client`` and by the
    managers' ``Server``).  After both halves of a handshake, or when one
    fails, ``sink`` gets a dict with the short form of the four frames::

        {"received_challenge", "sent_response", "sent_challenge",
         "received_response", "outcome"}
    """
    state = threading.local()
    orig_answer = mp_connection.answer_challenge
    orig_deliver = mp_connection.deliver_challenge

    def record(kind: str, frames: List[Any], outcome: Optional[str]) -> None:
        entry: Dict[str, str] = getattr(state, "entry", None) or {}
        state.entry = entry
        for direction, data in frames:
            if data.startswith(b"#CHALLENGE#"):
                entry[direction + "_challenge"] = describe(data)
            elif data in (b"#WELCOME#", b"#FAILURE#"):
                entry[direction + "_verdict"] = describe(data)
            else:
                entry[direction + "_response"] = describe(data)
        entry[kind] = "done"
        if outcome is not None or ("answer" in entry and "deliver" in entry):
            entry.pop("answer", None)
            entry.pop("deliver", None)
            entry["outcome"] = outcome or "ok"
            state.entry = None
            sink(entry)

    def answer_challenge(conn: Any, authkey: bytes, *args: Any, **kwargs: Any) -> None:
        frames: List[Any] = []
        try:
            tap: Any = _Tap(conn, frames)
            orig_answer(tap, authkey, *args, **kwargs)
        except BaseException as exc:
            record("answer", frames, type(exc).__name__)
            raise
        record("answer", frames, None)

    def deliver_challenge(conn: Any, authkey: bytes, *args: Any, **kwargs: Any) -> None:
        frames: List[Any] = []
        try:
            tap: Any = _Tap(conn, frames)
            orig_deliver(tap, authkey, *args, **kwargs)
        except BaseException as exc:
            record("deliver", frames, type(exc).__name__)
            raise
        record("deliver", frames, None)

    vars(mp_connection)["answer_challenge"] = answer_challenge
    vars(mp_connection)["deliver_challenge"] = deliver_challenge


def expected_handshake(challenger_modern: bool, responder_modern: bool) -> Dict[str, str]:
    """What one half of a handshake looks like between two stdlib-like peers.

    A modern peer (CPython 3.12+, distproc) challenges with ``{sha256}`` + 40
    random bytes and a legacy one (<= 3.11) with 20 random bytes.  A modern
    responder answers a prefixed challenge in kind and a 20-byte one with raw
    HMAC-MD5; a legacy responder always answers with raw HMAC-MD5 (16 bytes).
    """
    challenge = "{sha256}+40" if challenger_modern else "raw20"
    response = "{sha256}+32" if (challenger_modern and responder_modern) else "raw16"
    return {"challenge": challenge, "response": response}


def expected_transcript(we_modern: bool, peer_modern: bool) -> Dict[str, str]:
    """The entry :func:`install_handshake_tap` records after a good handshake."""
    theirs = expected_handshake(peer_modern, we_modern)
    ours = expected_handshake(we_modern, peer_modern)
    return {
        "received_challenge": theirs["challenge"],
        "sent_response": theirs["response"],
        "received_verdict": "#WELCOME#",
        "sent_challenge": ours["challenge"],
        "received_response": ours["response"],
        "sent_verdict": "#WELCOME#",
        "outcome": "ok",
    }


# ------------------------------------------------------------------ scenario
def _outcome(func: Callable[[], Any], expected: Type[BaseException], with_args: bool = True) -> Any:
    """What calling ``func`` did, as JSON-able data."""
    try:
        value = func()
    except Exception as exc:
        result: Dict[str, Any] = {
            "raised": type(exc).__name__,
            "is_expected_type": isinstance(exc, expected),
        }
        if with_args:
            result["args"] = [repr(a) for a in exc.args]
        return result
    return {"returned": repr(value)}


def number_of_objects(address: Any, authkey: bytes, serializer: str) -> int:
    """Ask the server how many shared objects it holds (one-shot server method).

    Uses the stdlib's own client, so it measures the server whatever the
    client under test is.
    """
    client_factory = vars(mp_managers)["listener_client"][serializer][1]
    conn = client_factory(address, authkey=authkey)
    try:
        count: int = vars(mp_managers)["dispatch"](conn, None, "number_of_objects")
    finally:
        conn.close()
    return count


def _wait_for_objects(address: Any, authkey: bytes, serializer: str, wanted: int) -> int:
    """Poll the object count until it is ``wanted`` or 5 s have passed."""
    deadline = time.monotonic() + 5.0
    while True:
        count = number_of_objects(address, authkey, serializer)
        if count == wanted or time.monotonic() > deadline:
            return count
        time.sleep(0.01)  # poll interval (bounded by the deadline above)


#: Size of the large queue items of the scenario: a few MiB, over every copy threshold.
LARGE = 3 * 1024 * 1024 + 5


def run_scenario(managers: Any, port: int, authkey: bytes, serializer: str) -> Dict[str, Any]:
    """Use every typeid of a server through ``managers.BaseManager``.

    ``managers`` is ``multiprocessing.managers`` or ``distproc.managers``.
    Returns JSON-able observations; :func:`expected_scenario` says what they
    must be.  With ``'xmlrpclib'`` only queues and dicts of simple values are
    used (tokens and exceptions cannot travel as XML-RPC).
    """
    full = serializer == "pickle"

    class Manager(managers.BaseManager):  # type: ignore[misc]
        pass

    register_client_typeids(Manager, managers.DictProxy)
    address = (HOST, port)
    manager = Manager(address=address, authkey=authkey, serializer=serializer)
    manager.connect()
    r: Dict[str, Any] = {}

    q = manager.get_queue()
    q.put({"k": [1, 2]})
    q.put((1, "two"))
    r["queue_get"] = q.get(timeout=5)
    item = q.get(True, 5)
    r["queue_tuple_type"] = type(item).__name__
    r["queue_tuple"] = list(item)
    r["queue_empty"] = q.empty()
    r["queue_qsize"] = q.qsize()
    if full:
        # Large values: received into reused buffers, sent without copies.
        large = [bytes([n]) * LARGE for n in (1, 2)]
        for value in large:
            q.put(value)
        back = [q.get(timeout=30) for _ in large]
        r["queue_large"] = [[len(v), v[:1].hex(), v == w] for v, w in zip(back, large)]
        r["queue_get_nowait"] = _outcome(q.get_nowait, queue.Empty)
        r["queue_get_timeout"] = _outcome(partial(q.get, timeout=0.05), queue.Empty)

    d = manager.Dict()
    d["x"] = 1
    d.update({"y": "two"})
    r["dict_x"] = d["x"]
    r["dict_get_y"] = d.get("y")
    r["dict_get_default"] = d.get("zz", "dflt")
    r["dict_len"] = len(d)
    r["dict_copy"] = d.copy()
    if full:
        r["dict_keys"] = sorted(d.keys())
        r["dict_missing"] = _outcome(partial(operator.getitem, d, "missing"), KeyError)
        r["dict_pop_missing"] = _outcome(partial(d.pop, "missing"), KeyError)

    calc: Any = None
    counter: Any = None
    if full:
        calc = manager.Calc(10)
        r["calc_add"] = calc.add(5)
        r["calc_divide"] = calc.divide(7, 2)
        r["calc_divide_zero"] = _outcome(partial(calc.divide, 1, 0), ZeroDivisionError)
        r["calc_fail"] = _outcome(partial(calc.fail, "boom"), ValueError)
        r["calc_private"] = _outcome(
            partial(calc._callmethod, "_secret"), mp_managers.RemoteError, with_args=False
        )
        counter = calc.make_counter(3)
        r["counter_is_proxy"] = isinstance(counter, managers.BaseProxy)
        r["counter_typeid"] = counter._token.typeid
        r["counter_address_is_server"] = tuple(counter._token.address) == address
        counter.increment()
        r["counter_increment"] = counter.increment()
        r["counter_value"] = counter.value()

    r["objects_live"] = number_of_objects(address, authkey, serializer)
    del q, d, calc, counter, item
    gc.collect()
    r["objects_after_release"] = _wait_for_objects(address, authkey, serializer, 0)
    return r


def expected_scenario(serializer: str) -> Dict[str, Any]:
    """What :func:`run_scenario` returns when both ends behave like the stdlib."""
    if serializer != "pickle":
        return {
            "queue_get": {"k": [1, 2]},
            "queue_tuple_type": "list",  # XML-RPC has no tuples
            "queue_tuple": [1, "two"],
            "queue_empty": True,
            "queue_qsize": 0,
            "dict_x": 1,
            "dict_get_y": "two",
            "dict_get_default": "dflt",
            "dict_len": 2,
            "dict_copy": {"x": 1, "y": "two"},
            "objects_live": 2,
            "objects_after_release": 0,
        }

    def raised(name: str, *args: Any) -> Dict[str, Any]:
        return {"raised": name, "is_expected_type": True, "args": [repr(a) for a in args]}

    return {
        "queue_get": {"k": [1, 2]},
        "queue_tuple_type": "tuple",
        "queue_tuple": [1, "two"],
        "queue_empty": True,
        "queue_qsize": 0,
        "queue_large": [[LARGE, "01", True], [LARGE, "02", True]],
        "queue_get_nowait": raised("Empty"),
        "queue_get_timeout": raised("Empty"),
        "dict_x": 1,
        "dict_get_y": "two",
        "dict_get_default": "dflt",
        "dict_len": 2,
        "dict_copy": {"x": 1, "y": "two"},
        "dict_keys": ["x", "y"],
        "dict_missing": raised("KeyError", "missing"),
        "dict_pop_missing": raised("KeyError", "missing"),
        "calc_add": 15,
        "calc_divide": 3.5,
        "calc_divide_zero": raised("ZeroDivisionError", "division by zero"),
        "calc_fail": raised("ValueError", "boom"),
        "calc_private": {"raised": "RemoteError", "is_expected_type": True},
        "counter_is_proxy": True,
        "counter_typeid": "Counter",
        "counter_address_is_server": True,
        "counter_increment": 5,
        "counter_value": 5,
        "objects_live": 4,
        "objects_after_release": 0,
    }


# --------------------------------------------------------------------- misc
def print_line(prefix: str, payload: Any) -> None:
    sys.stdout.write(prefix + (payload if isinstance(payload, str) else json.dumps(payload)))
    sys.stdout.write("\n")
    sys.stdout.flush()
