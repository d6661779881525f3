"""The loop-service contract: objects whose methods the server runs on its loop.

A shared object becomes a *loop service* by naming some of its methods in
``__distproc_loop_methods__``.  The server then calls each of them on its
event loop, as ``method(call, *args, **kwds)``, instead of on a thread: the
method must not block, and it answers through the :class:`LoopCall`, at once
or later (a long poll holds the call until there is something to say).  The
task service (:mod:`distproc.tasks.service`) is one.

* :class:`LoopCall`: what a loop method is handed: ``reply()``, ``fail()``,
  ``on_cancel()`` (the client went away or gave up), and the
  :class:`CallConnection` it came in on, whose ``close_callbacks`` run on the
  loop when that connection is lost (a service drops what the peer held).
* :class:`LoopService`: the class attributes that make an object one:
  ``__distproc_loop_methods__`` and ``__distproc_defer__`` (the methods a
  native client may send without waiting for their reply; it sees only
  their errors).
* :class:`StatusReporter`: ``__distproc_status__()``, a JSON-ready report that
  the server method ``status`` includes (``distproc status`` shows it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Protocol

__all__ = ["CallConnection", "LoopCall", "LoopService", "StatusReporter"]


class CallConnection(Protocol):
    """The connection a call came in on, as a loop service sees it."""

    #: Run on the loop, in order, when the connection is lost.
    close_callbacks: list[Callable[[], None]]


class LoopCall(Protocol):
    """A call to a loop method: answered once, now or later."""

    @property
    def connection(self) -> CallConnection:
        """The connection the call came in on."""
        ...

    def reply(self, value: Any) -> None:
        """Answer the call with ``value``."""
        ...

    def fail(self, exc: BaseException) -> None:
        """Answer the call with an error, raised in the caller as it is."""
        ...

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop if the call is cancelled before it is answered."""
        ...


class LoopService(Protocol):
    """An object some of whose methods run on the loop, called with a :class:`LoopCall`."""

    @property
    def __distproc_loop_methods__(self) -> Collection[str]:
        """The names of the methods called on the loop."""
        ...

    @property
    def __distproc_defer__(self) -> Collection[str]:
        """The names of the methods a client may send without waiting for the reply."""
        ...


class StatusReporter(Protocol):
    """An object that ``status`` reports on."""

    def __distproc_status__(self) -> dict[str, Any]:
        """What the object holds, as JSON-ready data with a ``"kind"``."""
        ...
