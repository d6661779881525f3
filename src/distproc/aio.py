"""An asyncio client: ``await`` shared objects without blocking the event loop.

::

    import distproc.aio

    async def main() -> None:
        async with await distproc.aio.connect(("127.0.0.1", 5000), b"key", QueueManager) as m:
            tasks = await m.get_task_queue()
            await tasks.put(1)
            print(await tasks.get(timeout=5))

It speaks the native protocol (:mod:`distproc.server.native_session`) over asyncio
streams: one connection per :class:`AsyncManager`, any number of calls in
flight, replies matched by request id by a reader task.  A call cancelled by
asyncio (``asyncio.wait_for``, task cancellation) sends ``CANCEL``, so a
``get()`` that was not served yet takes nothing.  ``put()`` on an unbounded
queue is sent without waiting, as with the blocking proxies.

The server must be a distproc server (stdlib servers have no request ids); for
a stdlib server, run a regular proxy's methods with ``loop.run_in_executor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import weakref
from typing import TYPE_CHECKING, Any

from .client.connect import AsyncStream, codec_for, connect_async
from .client.connection import convert_to_error
from .errors import ConnectionLostError, DistprocError
from .wire.codecs import Codec
from .wire.handshake import FLAG_PICKLE
from .wire.messages import KIND_PROXY, KIND_RETURN, Token
from .wire.records import CALL, CANCEL, DEFERRED, KINDS, NOREPLY, REPLY, iter_records, record

if TYPE_CHECKING:
    from .tls import TLSConfig

__all__ = ["AsyncManager", "AsyncProxy", "connect"]

class AsyncManager:
    """A connection to a distproc server, with the typeids of a manager class."""

    def __init__(self, stream: AsyncStream, codec: Codec, address: Any, registry: dict[str, Any]):
        self._stream = stream
        self._codec = codec
        self._address = address
        self._registry = registry
        self._rids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self._deferred: list[BaseException] = []
        self._closed: BaseException | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    # ------------------------------------------------------------- plumbing
    async def _read(self) -> None:
        try:
            while True:
                frame = await self._stream.recv()
                for op, rid, _, aux, blob in iter_records(frame):
                    if op == REPLY:
                        future = self._pending.pop(rid, None)
                        if future is not None and not future.done():
                            future.set_result((KINDS[aux], bytes(blob)))
                    elif op == DEFERRED:
                        error = convert_to_error(KINDS[aux], self._codec.loads(blob))
                        self._deferred.append(error)
        except (Exception, asyncio.CancelledError) as exc:
            self._closed = exc if isinstance(exc, Exception) else ConnectionLostError("closed")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(
                        ConnectionLostError(f"lost the connection to the server: {exc}")
                    )
            self._pending.clear()

    def _send_call(self, ident: Any, method: str, args: Any, kwds: Any, flags: int) -> int:
        if self._closed is not None:
            raise ConnectionLostError(f"lost the connection to the server: {self._closed}")
        rid = next(self._rids)
        blob = self._codec.dumps((ident, method, tuple(args), dict(kwds or {})))
        self._stream.send(b"".join(record(CALL, rid, 1, flags, blob)))
        return rid

    async def _call(self, ident: Any, method: str, args: Any = (), kwds: Any = None) -> Any:
        if self._deferred:
            raise self._deferred.pop(0)
        future: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        rid = self._send_call(ident, method, args, kwds, 0)
        self._pending[rid] = future
        try:
            await self._stream.writer.drain()
            kind, blob = await future
        except asyncio.CancelledError:
            if self._pending.pop(rid, None) is not None and self._closed is None:
                self._stream.send(b"".join(record(CANCEL, rid)))
            raise
        value = self._codec.loads(blob)
        if kind == KIND_RETURN:
            return value
        if kind == KIND_PROXY:
            exposed, token = value
            return self._proxy(token, exposed, {})
        raise convert_to_error(kind, value)

    def _noreply(self, ident: Any, method: str, args: Any, kwds: Any) -> None:
        if self._deferred:
            raise self._deferred.pop(0)
        self._send_call(ident, method, args, kwds, NOREPLY)

    def _proxy(self, token: Token, exposed: Any, hints: dict[str, Any]) -> AsyncProxy:
        proxy = AsyncProxy(self, token, tuple(exposed), frozenset(hints.get("defer", ())))
        weakref.finalize(proxy, self._decref, str(token.id))
        return proxy

    def _decref(self, ident: str) -> None:
        if self._closed is None and not self._stream.writer.is_closing():
            with contextlib.suppress(Exception):  # closing: the server releases it anyway
                self._send_call(None, "decref", (ident,), None, NOREPLY)

    # ---------------------------------------------------------------- API
    async def create(self, typeid: str, /, *args: Any, **kwds: Any) -> AsyncProxy:
        """Create a shared object of ``typeid``; return its asynchronous proxy."""
        ident, exposed, hints = await self._call(None, "create", (typeid, *args), kwds)
        return self._proxy(Token(typeid, self._address, ident), exposed, hints)

    def __getattr__(self, typeid: str) -> Any:
        if typeid.startswith("_") or typeid not in self._registry:
            raise AttributeError(typeid)

        async def create(*args: Any, **kwds: Any) -> AsyncProxy:
            return await self.create(typeid, *args, **kwds)

        return create

    async def number_of_objects(self) -> int:
        return int(await self._call(None, "number_of_objects"))

    async def aclose(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._stream.writer.close()
        with contextlib.suppress(OSError):
            await self._stream.writer.wait_closed()

    async def __aenter__(self) -> AsyncManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncProxy:
    """A shared object's methods, as coroutines."""

    def __init__(
        self, manager: AsyncManager, token: Token, exposed: tuple[str, ...], defer: frozenset[str]
    ) -> None:
        self._manager = manager
        self._token = token
        self._exposed = exposed
        self._defer = defer

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._exposed:
            raise AttributeError(f"{self._token.typeid!r} object has no exposed method {name!r}")
        manager, ident = self._manager, self._token.id

        if name in self._defer:

            async def deferred(*args: Any, **kwds: Any) -> None:
                manager._noreply(ident, name, args, kwds)

            return deferred

        async def method(*args: Any, **kwds: Any) -> Any:
            return await manager._call(ident, name, args, kwds)

        return method

    async def _getvalue(self) -> Any:
        return await self._manager._call(self._token.id, "#GETVALUE")

    def __repr__(self) -> str:
        return f"<AsyncProxy object, typeid {self._token.typeid!r} at {id(self):#x}>"


async def connect(
    address: Any,
    authkey: bytes | str,
    manager: Any = None,
    *,
    serializer: str = "pickle",
    allow_md5: bool = True,
    handshake_timeout: float | None = None,
    tls: TLSConfig | None = None,
) -> AsyncManager:
    """Connect to a distproc server; typeids come from ``manager`` (a BaseManager subclass).

    ``allow_md5=False`` refuses a server that authenticates with HMAC-MD5 only;
    ``handshake_timeout`` (seconds) bounds the handshake, as in
    :func:`distproc.client.connect.handshake_timeout`; ``tls`` connects with TLS
    (:class:`distproc.TLSConfig`).
    """
    key = authkey.encode("utf-8") if isinstance(authkey, str) else bytes(authkey)
    flags = FLAG_PICKLE if serializer == "pickle" else 0
    stream, agreement = await connect_async(
        address,
        key,
        flags=flags,
        allow_md5=allow_md5,
        timeout=handshake_timeout,
        session_id=os.urandom(16),
        tls=tls,
    )
    if not agreement.native:
        stream.writer.close()
        raise DistprocError(
            f"{address!r} is not a distproc server: distproc.aio needs request ids; "
            "for a stdlib server, call a regular proxy with loop.run_in_executor"
        )
    registry = dict(getattr(manager, "_registry", {}) or {})
    return AsyncManager(stream, codec_for(agreement), address, registry)
