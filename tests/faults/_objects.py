"""Shared objects served by the fault-test servers, and a peek at their queues."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from distproc.managers import BaseManager

__all__ = [
    "IMPORT_ROOT",
    "SERVER_QUEUE",
    "THING_EXPOSED",
    "Probe",
    "StartedManager",
    "Thing",
    "Unloadable",
    "get_server_queue",
    "make_registry",
    "waiting_getters",
]

#: The directory from which this module is importable under its ``__name__``.
IMPORT_ROOT = Path(__file__).resolve().parents[len(__name__.split(".")) - 1]

#: Methods of :class:`Thing` that clients may call.
THING_EXPOSED = ("ok", "make_lambda", "make_lock", "raise_unpicklable", "make_unloadable")


def _refuse_to_load() -> NoReturn:
    raise ValueError("this object refuses to be unpickled")


class Unloadable:
    """Pickles fine on the server; unpickling it on the client raises ValueError."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _refuse_to_load, ()


class Thing:
    """An object with well-behaved, badly-behaved and hidden methods."""

    def ok(self, value: Any = "ok") -> Any:
        return value

    def make_lambda(self) -> Callable[[], None]:
        return lambda: None

    def make_lock(self) -> Any:
        return threading.Lock()

    def raise_unpicklable(self) -> NoReturn:
        raise ValueError(threading.Lock())

    def make_unloadable(self) -> Unloadable:
        return Unloadable()

    def hidden(self) -> str:
        return "a method that is not exposed"


def waiting_getters(q: queue.Queue[Any]) -> int:
    """How many ``get()`` calls the server holds in line for ``q``.

    This peeks at distproc internals (``server/queues.py`` attaches a
    ``LoopQueue`` as ``q._distproc_waiters``); the tests use it only to know
    *when* a client's blocking call has reached the server, never as the thing
    under test.
    """
    waiters = getattr(q, "_distproc_waiters", None)
    return 0 if waiters is None else len(waiters.getters)


#: The queue behind ``get_server_queue`` in a server *process* (manager.start()).
SERVER_QUEUE: queue.Queue[Any] = queue.Queue()


def get_server_queue() -> queue.Queue[Any]:
    return SERVER_QUEUE


class Probe:
    """Served next to ``get_server_queue``: reports how many getters wait on it."""

    def getters(self) -> int:
        return waiting_getters(SERVER_QUEUE)


def make_registry(shared: queue.Queue[Any]) -> dict[str, tuple[Any, Any, Any, Any]]:
    """A raw Server registry: typeid -> (callable, exposed, method_to_typeid, proxytype)."""

    def get_queue() -> queue.Queue[Any]:
        return shared

    return {
        "Queue": (queue.Queue, None, None, None),
        "get_queue": (get_queue, None, None, None),
        "list": (list, None, None, None),
        "Thing": (Thing, THING_EXPOSED, None, None),
    }


class StartedManager(BaseManager):
    """Serves ``Queue``, ``get_server_queue`` and ``Probe`` from a server process.

    Defined here so that a spawned server process can import it by name (put
    :data:`IMPORT_ROOT` on ``sys.path`` first: pytest's importlib mode does not).
    """


StartedManager.register("Queue", queue.Queue)
StartedManager.register("get_server_queue", get_server_queue)
StartedManager.register("Probe", Probe)
