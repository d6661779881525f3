"""The proxy base: connections, calls, references and pickling of every proxy.

The public names and behaviour are those of ``multiprocessing.managers``:
:class:`BaseProxy` with ``_callmethod`` and ``_getvalue``, :func:`AutoProxy`,
:func:`MakeProxyType` and :func:`RebuildProxy`.  Proxy internals all start
with ``_`` so they never collide with remote names.  A proxy talks to a
distproc server over this process's shared native connection
(:mod:`distproc.client.mux_cache`), and to a stdlib server over a
connection per thread, as the stdlib does.

Differences from the stdlib, all deliberate:

* a call interrupted while it waits for its reply (Ctrl-C, a timeout signal)
  closes that thread's connection instead of leaving the reply in the socket,
  so the next call never reads a stale reply, and the server cancels the call;
* a ``#PROXY`` reply on a proxy that has no manager (one rebuilt in another
  process) builds an :func:`AutoProxy` instead of failing;
* each proxy is tracked by its own serial number, so the per-thread connection
  is closed only when the last proxy for that server goes away.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from multiprocessing import process, util
from multiprocessing.context import get_spawning_popen
from typing import Any, ClassVar, Protocol

from ..callcontext import context
from ..client.connection import Client, Connection, convert_to_error, dispatch
from ..client.mux import Multiplexer
from ..client.mux_cache import fork_generation, get_multiplexer
from ..errors import ConnectionLostError
from ..wire.messages import KIND_PROXY, KIND_RETURN, Token
from ..wire.serializers import SERIALIZERS
from . import rebuild

# typeshed lacks AuthenticationString; it exists on every version.
_AuthenticationString: Any = getattr(process, "AuthenticationString")  # noqa: B009

__all__ = [
    "AutoProxy",
    "BaseProxy",
    "MakeProxyType",
    "ProcessLocalSet",
    "ProxyManager",
    "RebuildProxy",
    "adopt_proxy",
    "client_factory",
]


class ProxyManager(Protocol):
    """What a proxy uses of the manager that made it (a :class:`~distproc.managers.BaseManager`)."""

    @property
    def _authkey(self) -> bytes: ...

    @property
    def _registry(self) -> dict[str, tuple[Any, Any, Any, Any]]: ...

    @property
    def _state(self) -> Any: ...


class ProcessLocalSet(set[Any]):
    """A set that empties itself in a forked child."""

    def __init__(self) -> None:
        super().__init__()
        util.register_after_fork(self, lambda obj: obj.clear())

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), ()


def client_factory(serializer: str) -> Callable[..., Connection]:
    """The connect function for a serializer, as ``listener_client[s][1]``."""
    if serializer not in SERIALIZERS:
        raise ValueError(f"unknown serializer {serializer!r}")

    def connect(address: Any, authkey: bytes | None = None) -> Connection:
        return Client(address, authkey, serializer=serializer)

    return connect


_serials = itertools.count()


class BaseProxy:
    """A base for proxies of shared objects."""

    _address_to_local: ClassVar[dict[Any, tuple[Any, ProcessLocalSet]]] = {}
    _mutex = util.ForkAwareThreadLock()
    _exposed_: ClassVar[tuple[str, ...]]
    _method_to_typeid_: ClassVar[dict[str, str] | None]
    _isauto = False
    #: Methods sent without waiting for their reply (from the server's hints).
    _defer: frozenset[str] = frozenset()
    _mux: Multiplexer | None = None

    def __init__(
        self,
        token: Token,
        serializer: str,
        manager: ProxyManager | None = None,
        authkey: bytes | None = None,
        exposed: Iterable[str] | None = None,
        incref: bool = True,
        manager_owned: bool = False,
    ) -> None:
        with BaseProxy._mutex:
            local = BaseProxy._address_to_local.get(token.address)
            if local is None:
                local = (util.ForkAwareLocal(), ProcessLocalSet())
                BaseProxy._address_to_local[token.address] = local
        self._tls = local[0]
        self._idset = local[1]
        self._token = token
        self._id = token.id
        self._manager = manager
        self._serializer = serializer
        self._Client = client_factory(serializer)
        self._owned_by_manager = manager_owned
        if authkey is not None:
            self._authkey = _AuthenticationString(authkey)
        elif manager is not None:
            self._authkey = manager._authkey
        else:
            self._authkey = process.current_process().authkey
        if incref:
            self._incref()
        util.register_after_fork(self, BaseProxy._after_fork)

    # ------------------------------------------------------------ connections
    def _connect(self) -> Connection:
        name = process.current_process().name
        if threading.current_thread().name != "MainThread":
            name += "|" + threading.current_thread().name
        conn = self._Client(self._token.address, authkey=self._authkey)
        try:
            dispatch(conn, None, "accept_connection", (name,))
        except BaseException:
            conn.close()
            raise
        self._tls.connection = conn
        return conn

    def _drop_connection(self, conn: Connection) -> None:
        if getattr(self._tls, "connection", None) is conn:
            del self._tls.connection
        conn.close()

    def _native(self) -> Multiplexer | None:
        """This process's native connection to the server, or ``None`` (a stdlib server)."""
        mux = self._mux
        if mux is None or mux.broken is not None or mux.generation != fork_generation():
            mux = get_multiplexer(self._token.address, bytes(self._authkey), self._serializer)
            self._mux = mux
        return mux

    def _callmethod(self, methodname: str, args: Any = (), kwds: Any = None) -> Any:
        """Call ``methodname`` on the referent and return a copy of the result."""
        mux = self._native()
        if mux is not None:
            mux.raise_deferred()
            if methodname in self._defer:
                return mux.call_noreply(self._id, methodname, tuple(args), kwds)
            kind, result = mux.call(self._id, methodname, args, kwds)
            if kind == KIND_RETURN:
                return result
            try:
                return self._result(kind, result, native=True)
            finally:
                del result  # an exception raised here must not keep itself alive (gh-106558)
        conn: Connection | None = getattr(self._tls, "connection", None)
        if conn is None:
            conn = self._connect()
        payload = conn.codec.dumps((self._id, methodname, args, {} if kwds is None else kwds))
        try:
            conn.send_bytes(payload)
            # Proxies unpickled from the reply (nested proxies) borrow this one's
            # authkey and manager, where the stdlib falls back to
            # current_process().authkey and fails with any other key.
            context.receiver = self
            try:
                kind, result = conn.recv()
            finally:
                context.receiver = None
        except BaseException as exc:
            # The reply may still be on its way: this connection can no longer
            # tell it from the reply to the next call, so it goes.
            self._drop_connection(conn)
            if isinstance(exc, (BrokenPipeError, ConnectionResetError)) and not isinstance(
                exc, ConnectionLostError
            ):
                raise ConnectionLostError(f"lost the connection to the server: {exc}") from exc
            raise
        try:
            return self._result(kind, result, native=False)
        finally:
            del result

    def _result(self, kind: str, result: Any, *, native: bool) -> Any:
        if kind == KIND_RETURN:
            return result
        if kind == KIND_PROXY:
            exposed, token = result
            return self._proxy_from_reply(token, exposed, native=native)
        try:
            raise convert_to_error(kind, result)
        finally:
            del result

    def _proxy_from_reply(self, token: Token, exposed: Any, *, native: bool) -> BaseProxy:
        manager = self._manager
        proxytype: Any = AutoProxy
        if manager is not None and token.typeid in manager._registry:
            proxytype = manager._registry[token.typeid][-1]
        token.address = self._token.address
        if native:  # the server counted the reference for this connection: adopt it
            adopted: BaseProxy = adopt_proxy(
                proxytype, token, self._serializer, manager, self._authkey, exposed
            )
            return adopted
        proxy = proxytype(
            token, self._serializer, manager=manager, authkey=self._authkey, exposed=exposed
        )
        with self._Client(token.address, authkey=self._authkey) as conn:
            dispatch(conn, None, "decref", (token.id,))
        return proxy  # type: ignore[no-any-return]  # proxytype is any registered callable

    def _getvalue(self) -> Any:
        """A copy of the referent."""
        return self._callmethod("#GETVALUE")

    # ------------------------------------------------------------- refcounts
    def _incref(self) -> None:
        if self._owned_by_manager:
            return
        mux = self._native()
        if mux is not None:
            kind, result = mux.call(None, "incref", (self._id,))
            self._result(kind, result, native=True)
        else:
            with self._Client(self._token.address, authkey=self._authkey) as conn:
                dispatch(conn, None, "incref", (self._id,))
        self._adopt()

    def _adopt(self) -> None:
        """Own one reference to the referent (taken already); give it back when collected."""
        self._native()  # the finalizer must know which connection to decref on
        serial = next(_serials)
        self._idset.add(serial)
        state = self._manager._state if self._manager is not None else None
        self._close = util.Finalize(
            self,
            BaseProxy._decref,
            args=(self._token, self._authkey, state, self._tls, self._idset, self._Client, serial),
            kwargs={"mux": self._mux},
            exitpriority=10,
        )

    @staticmethod
    def _decref(
        token: Token,
        authkey: bytes,
        state: Any,
        tls: Any,
        idset: ProcessLocalSet,
        _Client: Callable[..., Connection],
        serial: int = -1,
        mux: Multiplexer | None = None,
    ) -> None:
        idset.discard(serial)
        if mux is not None and mux.generation == fork_generation():
            if mux.broken is None and (state is None or state.value == 1):
                mux.send_later(None, "decref", (token.id,))
            return
        if state is None or state.value == 1:  # State.STARTED
            try:
                with _Client(token.address, authkey=authkey) as conn:
                    dispatch(conn, None, "decref", (token.id,))
            except Exception as exc:
                util.debug("... decref failed %s", exc)
        if not idset and hasattr(tls, "connection"):
            tls.connection.close()
            del tls.connection

    def _after_fork(self) -> None:
        self._manager = None
        try:
            self._incref()
        except Exception as exc:
            util.info("incref failed: %s", exc)

    # ---------------------------------------------------------------- pickle
    def __reduce__(self) -> tuple[Any, ...]:
        kwds: dict[str, Any] = {}
        if get_spawning_popen() is not None:
            kwds["authkey"] = self._authkey
        if self._isauto:
            kwds["exposed"] = self._exposed_
            return RebuildProxy, (AutoProxy, self._token, self._serializer, kwds)
        return RebuildProxy, (type(self), self._token, self._serializer, kwds)

    def __deepcopy__(self, memo: Any) -> Any:
        return self._getvalue()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object, typeid {self._token.typeid!r} at {id(self):#x}>"

    def __str__(self) -> str:
        try:
            return str(self._callmethod("__repr__"))
        except Exception:
            return repr(self)[:-1] + "; '__str__()' failed>"


def adopt_proxy(
    proxytype: Any,
    token: Token,
    serializer: str,
    manager: ProxyManager | None,
    authkey: bytes,
    exposed: Any,
    defer: Any = (),
) -> Any:
    """A proxy that owns a reference the server already counted for this connection."""
    proxy = proxytype(
        token, serializer, manager=manager, authkey=authkey, exposed=exposed, incref=False
    )
    if isinstance(proxy, BaseProxy):
        proxy._adopt()
        proxy._defer = frozenset(defer)
    return proxy


def RebuildProxy(
    func: Callable[..., Any], token: Token, serializer: str, kwds: dict[str, Any]
) -> Any:
    """Unpickle a proxy (the function that pickled proxies name); see :mod:`.rebuild`."""
    plan = rebuild.prepare(token, kwds, registered=func is not AutoProxy)
    proxy = func(token, serializer, incref=plan.incref, **kwds)
    plan.settle(proxy)
    if isinstance(plan.adopt_on, Multiplexer) and isinstance(proxy, BaseProxy):
        proxy._mux = plan.adopt_on
        proxy._adopt()
    return proxy


def _make_method(name: str) -> Callable[..., Any]:
    def method(self: BaseProxy, /, *args: Any, **kwds: Any) -> Any:
        return self._callmethod(name, args, kwds)

    method.__name__ = name
    return method


_proxy_types: dict[tuple[str, tuple[str, ...]], type[BaseProxy]] = {}


def MakeProxyType(name: str, exposed: Iterable[str], _cache: Any = None) -> type[BaseProxy]:
    """A proxy class with one method per name in ``exposed``."""
    exposed = tuple(exposed)
    cache: dict[tuple[str, tuple[str, ...]], type[BaseProxy]] = (
        _proxy_types if _cache is None else _cache
    )
    cached = cache.get((name, exposed))
    if cached is not None:
        return cached
    namespace: dict[str, Any] = {name_: _make_method(name_) for name_ in exposed}
    namespace["__module__"] = __package__  # where the package re-exports it
    proxy_type: Any = type(name, (BaseProxy,), namespace)
    proxy_type._exposed_ = exposed
    cache[(name, exposed)] = proxy_type
    return cache[(name, exposed)]


def AutoProxy(
    token: Token,
    serializer: str,
    manager: ProxyManager | None = None,
    authkey: bytes | None = None,
    exposed: Iterable[str] | None = None,
    incref: bool = True,
    manager_owned: bool = False,
) -> BaseProxy:
    """A proxy whose methods are the referent's exposed methods."""
    _Client = client_factory(serializer)
    if exposed is None:
        with _Client(token.address, authkey=authkey) as conn:
            exposed = dispatch(conn, None, "get_methods", (token,))
    if authkey is None and manager is not None:
        authkey = manager._authkey
    if authkey is None:
        authkey = process.current_process().authkey
    proxy_type = MakeProxyType(f"AutoProxy[{token.typeid}]", exposed or ())
    proxy = proxy_type(
        token,
        serializer,
        manager=manager,
        authkey=authkey,
        incref=incref,
        manager_owned=manager_owned,
    )
    proxy._isauto = True
    return proxy


