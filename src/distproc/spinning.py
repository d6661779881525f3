"""Spin briefly before sleeping on a socket: round trips without wake-up latency.

A process that blocks in ``recv()`` or ``epoll_wait()`` gives up its CPU; when
the reply comes, the kernel must wake it, and on a virtual machine an idle CPU
takes tens of microseconds to wake, several times a loopback round trip
between two processes that poll (the README gives the figures).  A
request/reply protocol pays that twice per call.

So, where another CPU may be running the peer, a client that waits for a reply
and a server that has just served a request first *poll* for a short while
(:data:`SPIN_SECONDS`, 100 µs by default) and only then block.  Each poll
yields the CPU (``sched_yield``), so a runnable process on the same CPU is not
kept waiting.  A process allowed on one CPU only (``taskset -c 0``) never
spins: its peer cannot run while it polls.  An idle server does not spin at
all: it spins only within :data:`SPIN_SECONDS` of its last event.

``DISTPROC_SPIN_US`` sets the budget in microseconds; ``0`` turns spinning off.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import time
from typing import Any

__all__ = [
    "SPIN_SECONDS",
    "SpinningSelector",
    "new_event_loop",
    "recv_into_spinning",
    "spin_seconds",
]

#: The default budget, in seconds: a little more than a peer's turnaround.
SPIN_SECONDS = 100e-6

#: The budget, once worked out; a fork forgets it (the child may get other CPUs).
_budget: float | None = None


def _configured() -> float:
    value = os.environ.get("DISTPROC_SPIN_US", "").strip()
    if not value:
        return SPIN_SECONDS
    try:
        micros = float(value)
    except ValueError:
        return SPIN_SECONDS
    return max(0.0, micros) / 1e6


def spin_seconds() -> float:
    """How long this process polls before it blocks (0 if it may use one CPU only)."""
    global _budget
    if _budget is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        can_yield = hasattr(os, "sched_yield")
        _budget = _configured() if cpus > 1 and can_yield else 0.0
    return _budget


def _forget_budget() -> None:
    global _budget
    _budget = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_budget)


_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


def recv_into_spinning(sock: socket.socket, buffer: memoryview) -> int:
    """``sock.recv_into(buffer)`` on a blocking socket, polling first for a while."""
    budget = spin_seconds() if _DONTWAIT else 0.0
    if budget:
        deadline = time.perf_counter() + budget
        yield_ = os.sched_yield
        while True:
            try:
                return sock.recv_into(buffer, 0, _DONTWAIT)
            except BlockingIOError:
                pass
            if time.perf_counter() >= deadline:
                break
            yield_()
    return sock.recv_into(buffer)


_Base: Any = getattr(selectors, "EpollSelector", selectors.DefaultSelector)


class SpinningSelector(_Base):  # type: ignore[misc]  # the platform's best selector
    """An asyncio selector that polls for up to the spin budget after each event."""

    def __init__(self) -> None:
        super().__init__()
        self._budget = spin_seconds()
        self._last = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        budget = self._budget
        if not budget or (timeout is not None and timeout <= 0):
            ready: list[tuple[selectors.SelectorKey, int]] = super().select(timeout)
            return ready
        start = now = time.perf_counter()
        deadline = self._last + budget
        if timeout is not None:
            deadline = min(deadline, start + timeout)
        poll = super().select
        yield_ = os.sched_yield
        while True:
            ready = poll(0)
            if ready:
                self._last = time.perf_counter()
                return ready
            now = time.perf_counter()
            if now >= deadline:
                break
            yield_()
        if timeout is not None:
            timeout = max(0.0, timeout - (now - start))
        ready = poll(timeout)
        if ready:
            self._last = time.perf_counter()
        return ready


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop whose selector spins (a plain one where spinning is off)."""
    if not spin_seconds():
        return asyncio.new_event_loop()
    return asyncio.SelectorEventLoop(SpinningSelector())
