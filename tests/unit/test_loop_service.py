"""The loop-service contract (distproc.server.loop_service), served by a real server."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, ClassVar

import pytest
from shared_fixtures import AUTHKEY, ServeFn, wait_until

from distproc.managers import BaseManager
from distproc.server import CallConnection, LoopCall, LoopService, StatusReporter
from distproc.tasks.service import TaskService


class Echo:
    """A loop service: ``echo`` answers at once, ``hold`` when ``release`` is called."""

    __distproc_loop_methods__: ClassVar[frozenset[str]] = frozenset({"echo", "hold", "release"})
    __distproc_defer__: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.held: list[LoopCall] = []
        self.threads: set[str] = set()
        self.lost = threading.Event()
        self.cancelled = threading.Event()

    def echo(self, call: LoopCall, value: Any) -> None:
        self.threads.add(threading.current_thread().name)
        connection: CallConnection = call.connection
        if self.lost.set not in connection.close_callbacks:
            connection.close_callbacks.append(self.lost.set)
        call.reply(value)

    def hold(self, call: LoopCall) -> None:
        call.on_cancel(self.cancelled.set)
        self.held.append(call)

    def release(self, call: LoopCall, value: Any) -> None:
        self.held.pop().reply(value)
        call.fail(LookupError("released"))

    def __distproc_status__(self) -> dict[str, Any]:
        return {"kind": "echo", "held": len(self.held)}


_echo = Echo()


def get_echo() -> Echo:
    return _echo


class EchoManager(BaseManager):
    pass


EchoManager.register("Echo", get_echo, exposed=sorted(Echo.__distproc_loop_methods__))


def test_loop_methods_run_on_the_loop_and_answer_through_their_call(serve: ServeFn) -> None:
    server, client = serve(EchoManager)
    echo: Any = client.Echo()
    assert echo.echo({"a": 1}) == {"a": 1}
    assert _echo.threads == {"test-server"}  # the server's loop thread, not a pool thread
    result: list[Any] = []
    holder = threading.Thread(target=lambda: result.append(echo.hold()))
    holder.start()
    wait_until(lambda: _echo.held, "the held call reached the service")
    second = EchoManager(address=server.address, authkey=AUTHKEY)
    second.connect()
    other: Any = second.Echo()  # type: ignore[attr-defined]  # made by register()
    with pytest.raises(LookupError, match="released"):  # fail(): the exception itself
        other.release("later")
    holder.join(10)
    assert result == ["later"]
    assert not _echo.cancelled.is_set()
    reports = client.server_call("status")["services"]
    assert {"kind": "echo", "held": 0} in reports


def test_close_callbacks_run_when_the_connection_is_lost(serve: ServeFn) -> None:
    _, client = serve(EchoManager)
    _echo.lost.clear()
    echo: Any = client.Echo()
    echo.echo(1)
    client.close_connections()
    assert _echo.lost.wait(10)


def test_the_task_service_keeps_the_contract() -> None:
    """The Protocols type the task service as the server uses it (mypy checks the lines)."""
    loop = asyncio.new_event_loop()
    try:
        service = TaskService(loop)
        as_loop_service: LoopService = service
        as_reporter: StatusReporter = service
        assert set(as_loop_service.__distproc_defer__) <= set(
            as_loop_service.__distproc_loop_methods__
        )
        assert as_reporter.__distproc_status__()["kind"] == "tasks"
        service.close()
    finally:
        loop.close()
