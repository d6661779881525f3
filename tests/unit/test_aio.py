"""distproc.aio: awaiting shared objects from an asyncio program."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable
from multiprocessing.managers import BaseManager as StdlibManager
from typing import Any

import pytest
from shared_fixtures import AUTHKEY, ServeFn

import distproc.aio
from distproc.errors import DistprocError
from distproc.managers import BaseManager


class QM(BaseManager):
    pass


QM.register("Queue", queue.Queue)


def test_await_queue_methods_without_blocking_the_loop(serve: ServeFn) -> None:
    server, _ = serve(QM)

    async def main() -> list[Any]:
        async with await distproc.aio.connect(server.address, AUTHKEY, QM) as m:
            q = await m.Queue()
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            tick_task = asyncio.create_task(ticker())
            getter = asyncio.create_task(q.get(timeout=10))  # blocks on the server...
            await asyncio.sleep(0.05)
            assert not getter.done() and ticks > 10  # ...but not this loop
            await q.put("hello")
            got = [await getter]
            await q.put_many([1, 2, 3])
            got.append(await q.get_many(10))
            with pytest.raises(queue.Empty):
                await q.get(timeout=0.01)
            tick_task.cancel()
            return got

    assert asyncio.run(main()) == ["hello", [1, 2, 3]]


def test_cancelled_get_takes_nothing(serve: ServeFn) -> None:
    server, client = serve(QM)
    sync_q: Any = client.Queue()

    async def main() -> Any:
        async with await distproc.aio.connect(server.address, AUTHKEY, QM) as m:
            q = await m.create("Queue")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(q.get(), 0.05)
            await q.qsize()  # after the cancel reached the server
            await q.put("for the next getter")
            return await q.get(timeout=5)

    assert asyncio.run(main()) == "for the next getter"
    del sync_q


def test_many_calls_in_flight(serve: ServeFn) -> None:
    server, _ = serve(QM)

    async def main() -> list[Any]:
        async with await distproc.aio.connect(server.address, AUTHKEY, QM) as m:
            q = await m.Queue()
            getters = [asyncio.create_task(q.get(timeout=10)) for _ in range(20)]
            await q.put_many(range(20))
            return sorted(await asyncio.gather(*getters))

    assert asyncio.run(main()) == list(range(20))


class StdlibQM(StdlibManager):
    pass


def test_stdlib_server_is_refused_clearly(stdlib_manager: Callable[..., Any]) -> None:
    server = stdlib_manager(StdlibQM)

    async def main() -> None:
        with pytest.raises(DistprocError, match="not a distproc server"):
            await distproc.aio.connect(server.address, AUTHKEY)

    asyncio.run(main())


def test_native_serializer_uses_the_native_codec_on_the_same_host(serve: ServeFn) -> None:
    """``serializer='native'`` never sends pickle, also after the move to the
    same-host socket (a pickle server then serves this client with msgpack)."""
    server, _ = serve(QM)

    async def main() -> tuple[Any, str]:
        async with await distproc.aio.connect(
            server.address, AUTHKEY, QM, serializer="native"
        ) as m:
            q = await m.Queue()
            await q.put({"a": (1, 2)})
            return await q.get(timeout=5), type(m._codec).__name__

    assert asyncio.run(main()) == ({"a": (1, 2)}, "NativeCodec")
