"""Polling before blocking: the budget, the client's recv and the server's selector."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from distproc import spinning
from distproc.spinning import SpinningSelector, recv_into_spinning, spin_seconds

CHECK_BUDGET = (
    "import os, sys; from distproc.spinning import spin_seconds; print(repr(spin_seconds()))"
)


def budget_in_child(env: dict[str, str], cpus: set[int] | None = None) -> float:
    """``spin_seconds()`` as a fresh interpreter sees it (optionally on ``cpus`` only)."""
    code = CHECK_BUDGET
    if cpus is not None:
        code = f"import os; os.sched_setaffinity(0, {sorted(cpus)!r}); " + code
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return float(out)


@pytest.mark.slow
def test_budget_from_the_environment() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    assert budget_in_child({"DISTPROC_SPIN_US": "250"}) == pytest.approx(250e-6)
    assert budget_in_child({"DISTPROC_SPIN_US": "0"}) == 0.0
    assert budget_in_child({"DISTPROC_SPIN_US": "not a number"}) == spinning.SPIN_SECONDS
    assert budget_in_child({"DISTPROC_SPIN_US": ""}) == spinning.SPIN_SECONDS


def test_no_spinning_on_one_cpu() -> None:
    """Pinned to one CPU, polling would only keep the peer from running."""
    cpu = min(os.sched_getaffinity(0))
    assert budget_in_child({"DISTPROC_SPIN_US": "250"}, cpus={cpu}) == 0.0


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def spin_budget(monkeypatch: pytest.MonkeyPatch) -> float:
    """Spinning on, whatever this machine's CPUs, with a budget long enough to see."""
    budget = 0.05
    monkeypatch.setattr(spinning, "_budget", budget)
    return budget


def test_recv_returns_data_that_is_already_there(
    pair: tuple[socket.socket, socket.socket], spin_budget: float
) -> None:
    a, b = pair
    b.sendall(b"hello")
    buf = bytearray(16)
    assert recv_into_spinning(a, memoryview(buf)) == 5
    assert bytes(buf[:5]) == b"hello"


class WatchedSocket(socket.socket):
    """Records the flags of each ``recv_into`` and says when a blocking one starts."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock.family, sock.type, sock.proto, fileno=sock.detach())
        self.flags: list[int] = []
        self.blocking_recv = threading.Event()

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self.flags.append(flags)
        if not flags:
            self.blocking_recv.set()
        return super().recv_into(buffer, nbytes, flags)


def test_recv_blocks_once_the_budget_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Data that comes after the spin is still received: the socket then blocks."""
    monkeypatch.setattr(spinning, "_budget", 1e-3)
    a0, b = socket.socketpair()
    a = WatchedSocket(a0)
    try:

        def send_once_blocked() -> None:
            a.blocking_recv.wait(10)
            b.sendall(b"late")

        sender = threading.Thread(target=send_once_blocked)
        sender.start()
        buf = bytearray(16)
        n = recv_into_spinning(a, memoryview(buf))
        sender.join(10)
        assert bytes(buf[:n]) == b"late"
        assert a.flags[0] == socket.MSG_DONTWAIT  # it polled first,
        assert a.flags[-1] == 0  # then blocked
        assert a.gettimeout() is None  # and the socket's own mode is untouched
    finally:
        a.close()
        b.close()


def test_recv_sees_a_closed_peer(
    pair: tuple[socket.socket, socket.socket], spin_budget: float
) -> None:
    a, b = pair
    b.close()
    assert recv_into_spinning(a, memoryview(bytearray(8))) == 0


def test_selector_returns_events_and_honours_timeouts(
    pair: tuple[socket.socket, socket.socket], spin_budget: float
) -> None:
    a, b = pair
    sel = SpinningSelector()
    try:
        sel.register(a, selectors.EVENT_READ)
        assert sel.select(0) == []
        started = time.monotonic()
        assert sel.select(0.01) == []  # a timeout shorter than the budget ends the spin
        assert time.monotonic() - started < spin_budget * 4
        b.sendall(b"x")
        ready = sel.select(5)
        assert [(key.fileobj, events) for key, events in ready] == [(a, selectors.EVENT_READ)]
    finally:
        sel.close()


def test_an_idle_selector_sleeps(
    pair: tuple[socket.socket, socket.socket],
    spin_budget: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Long after its last event, the selector blocks at once instead of polling;
    right after an event, it polls."""
    a, b = pair
    polls = 0
    original = os.sched_yield

    def counting_yield() -> None:
        nonlocal polls
        polls += 1
        original()

    monkeypatch.setattr(os, "sched_yield", counting_yield)
    sel = SpinningSelector()
    try:
        sel.register(a, selectors.EVENT_READ)
        assert sel.select(0.01) == []  # never had an event: no polling
        assert polls == 0
        b.sendall(b"x")
        assert len(sel.select(5)) == 1
        a.recv(1)
        assert sel.select(0.01) == []  # just had one: it polls until the timeout
        assert polls > 0
    finally:
        sel.close()


def test_selector_spins_only_when_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spinning, "_budget", 0.0)
    assert spin_seconds() == 0.0
    loop = spinning.new_event_loop()
    try:
        assert not isinstance(loop._selector, SpinningSelector)  # type: ignore[attr-defined]
    finally:
        loop.close()
    monkeypatch.setattr(spinning, "_budget", 1e-4)
    loop = spinning.new_event_loop()
    try:
        assert isinstance(loop._selector, SpinningSelector)  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_a_forked_child_measures_its_own_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fork hook forgets the budget: a child may be allowed other CPUs."""
    monkeypatch.setattr(spinning, "_budget", 123.0)
    monkeypatch.setenv("DISTPROC_SPIN_US", "40")
    spinning._forget_budget()  # what os.register_at_fork runs in a child
    expected = 40e-6 if len(os.sched_getaffinity(0)) > 1 else 0.0
    assert spin_seconds() == pytest.approx(expected)
