"""Object calls: where each runs, and how its reply finds its way back.

Both protocols (the stdlib's channel and distproc's native session) hand an
object call to :func:`execute` with a :class:`Call` that knows how to deliver
the reply on its connection.  A call runs:

* on the loop: ``get``/``put``/``get_many``/``put_many`` of queues (see
  :mod:`.queues`: a blocked getter is a waiter record, not a thread), the
  methods of builtin containers that cannot block (:data:`INLINE_METHODS`),
  and the methods that a *loop service* lists in its class attribute
  ``__distproc_loop_methods__``: those are called on the loop as
  ``method(call, *args, **kwds)`` and answer through ``call.reply()`` or
  ``call.fail()``, now or later (the task service is one);
* on a sticky thread of its caller: methods of objects that check the calling
  thread (``RLock``, ``Condition``);
* on the elastic pool (:mod:`.threads`): every other user method, since any of
  them may block.
"""

from __future__ import annotations

import array
import contextlib
import threading
import traceback
from collections.abc import Callable
from typing import Any

from ..wire.messages import KIND_ERROR, KIND_PROXY, KIND_RETURN, KIND_TRACEBACK
from ..wire.proxy_methods import ARRAY_METHODS, DICT_METHODS, LIST_METHODS
from .context import Message, ServerContext
from .loop_service import CallConnection
from .objects import Entry
from .queues import LOOP_METHODS, is_loop_servable
from .threads import CallThread, ThreadGate

__all__ = [
    "ARGUMENT_COST",
    "INLINE_METHODS",
    "Call",
    "execute",
    "give_back",
    "run_off_loop",
    "serving",
    "traceback_text",
]

#: Container methods whose cost grows with an argument, not with the data a
#: frame carries: ``ListProxy * 30_000_000`` is a few bytes.  A thread would not
#: help (the repetition holds the GIL throughout), so the result's size is
#: bounded instead, by ``ServerConfig.max_decoded_items``: no more values than
#: one call could have sent.
ARGUMENT_COST = frozenset(("__mul__", "__rmul__", "__imul__"))
#: Methods that run on the loop because they cannot block (per exact type): all
#: of the builtin containers' methods that their proxies expose.
INLINE_METHODS: dict[type, frozenset[str]] = {
    list: frozenset(LIST_METHODS),
    dict: frozenset(DICT_METHODS),
    array.array: frozenset(ARRAY_METHODS),
}
_QUEUE_INLINE = frozenset(["qsize", "empty", "full", "put_nowait", "get_nowait", "task_done"])
STICKY_TYPES = (type(threading.RLock()), threading.Condition)


def traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _not_exposed(methodname: str, obj: Any, exposed: tuple[str, ...]) -> str:
    return (
        "Traceback (most recent call last):\n"
        f"AttributeError: method {methodname!r} of {type(obj)!r} object is not in "
        f"exposed={exposed!r}\n"
    )


class Call:
    """One call awaiting its reply; subclasses deliver replies on their connection.

    It is the :class:`~.loop_service.LoopCall` that loop methods are handed.
    """

    __slots__ = ("cancel", "entry", "methodname", "server")

    def __init__(self, server: ServerContext) -> None:
        self.server = server
        self.entry: Entry | None = None
        self.methodname = ""
        self.cancel: Callable[[], None] | None = None

    @property
    def gate(self) -> ThreadGate | None:
        """What bounds the threads of this call's connection (``None``: nothing)."""
        return getattr(self.connection, "gate", None)

    def deliver(self, msg: Message) -> None:
        """Send the reply ``(kind, value)``; called on the loop, at most once counts."""
        raise NotImplementedError

    @property
    def connection(self) -> CallConnection:
        """The connection this call came in on."""
        raise NotImplementedError

    def reply(self, value: Any) -> None:
        entry = self.entry
        if entry is None or not entry.method_to_typeid:  # no method here returns a proxy
            self.deliver((KIND_RETURN, value))
            return
        try:
            msg = self.server.result_message(entry, self.methodname, value)
        except Exception as exc:
            msg = (KIND_TRACEBACK, traceback_text(exc))
        self.deliver(msg)

    def fail(self, exc: BaseException) -> None:
        self.deliver((KIND_ERROR, exc))

    def on_cancel(self, callback: Callable[[], None]) -> None:
        self.cancel = callback


def give_back(server: ServerContext, msg: Message, *, owns: bool = False) -> None:
    """Release the reference that an undelivered reply would have handed its client:
    a proxy's (``#PROXY``), or with ``owns`` the object a ``create`` returned."""
    kind, value = msg
    try:
        if kind == KIND_PROXY:
            server.table.decref(value[1].id)
        elif owns and kind == KIND_RETURN:
            server.table.decref(value[0])
    except KeyError:
        pass


def _check_repeat(server: ServerContext, obj: Any, args: tuple[Any, ...]) -> None:
    """Refuse a repetition whose result would hold more values than a call may carry."""
    times = args[0] if len(args) == 1 else None
    limit = server.config.max_decoded_items
    if isinstance(times, int) and times > 1 and len(obj) * times > limit:
        raise ValueError(
            f"the result would hold {len(obj) * times} items, more than one call may "
            f"carry ({limit}, ServerConfig.max_decoded_items)"
        )


def serving(entry: Entry) -> tuple[frozenset[str], bool]:
    """How calls to ``entry.obj`` are served, worked out once: the methods its
    class runs on the loop, and whether it is a queue that the loop serves."""
    obj = entry.obj
    loop_methods = frozenset(getattr(type(obj), "__distproc_loop_methods__", ()))
    entry.serving = (loop_methods, is_loop_servable(obj))
    return entry.serving


def run_off_loop(
    server: ServerContext,
    job: Callable[[], Message],
    done: Callable[[Message], None],
    thread: CallThread | None = None,
    gate: ThreadGate | None = None,
) -> None:
    """Run ``job`` on a thread (``thread``, or one of the pool's through the
    connection's ``gate``); hand its message to ``done`` on the loop."""
    loop = server.loop
    assert loop is not None

    def work() -> None:
        try:
            msg = job()
        except BaseException as exc:  # SystemExit and friends from user code
            msg = (KIND_TRACEBACK, traceback_text(exc))
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to answer
            loop.call_soon_threadsafe(done, msg)

    if thread is not None:
        thread.submit(work)
    elif gate is not None:
        gate.submit(work)
    else:
        server.pool.submit(work)


def execute(
    server: ServerContext,
    call: Call,
    ident: Any,
    methodname: str,
    args: tuple[Any, ...],
    kwds: dict[str, Any],
    sticky: Callable[[], CallThread],
) -> None:
    """Run one object call; its reply goes to ``call.deliver``."""
    try:
        entry = server.table.get(ident)
    except (KeyError, TypeError) as exc:
        call.deliver((KIND_TRACEBACK, traceback_text(exc)))
        return
    obj = entry.obj
    if methodname not in entry.exposed:
        if methodname == "#GETVALUE":
            msg: Message = (KIND_RETURN, obj)
        elif methodname in ("__str__", "__repr__"):
            try:
                msg = (KIND_RETURN, str(obj) if methodname == "__str__" else repr(obj))
            except Exception as exc:
                msg = (KIND_TRACEBACK, traceback_text(exc))
        else:
            msg = (KIND_TRACEBACK, _not_exposed(methodname, obj, entry.exposed_order))
        call.deliver(msg)
        return
    call.entry = entry
    call.methodname = methodname
    loop_methods, servable = entry.serving or serving(entry)
    try:
        if methodname in loop_methods:
            getattr(obj, methodname)(call, *args, **kwds)
            return
        if servable:
            if methodname in LOOP_METHODS:
                getattr(server.loop_queue(obj), methodname)(call, args, kwds)
                return
            if methodname in _QUEUE_INLINE:
                call.reply(getattr(obj, methodname)(*args, **kwds))
                return
        elif methodname in INLINE_METHODS.get(type(obj), ()):
            if methodname in ARGUMENT_COST:
                _check_repeat(server, obj, args)
            call.reply(getattr(obj, methodname)(*args, **kwds))
            return
    except Exception as exc:
        call.fail(exc)
        return

    def job() -> Message:
        try:
            result = getattr(obj, methodname)(*args, **kwds)
        except Exception as exc:
            return (KIND_ERROR, exc)
        try:
            return server.result_message(entry, methodname, result)
        except Exception as exc:
            return (KIND_TRACEBACK, traceback_text(exc))

    if isinstance(obj, STICKY_TYPES):
        run_off_loop(server, job, call.deliver, sticky())
    else:
        run_off_loop(server, job, call.deliver, gate=call.gate)
