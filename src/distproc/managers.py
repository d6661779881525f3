"""A drop-in for ``multiprocessing.managers``: change one import, keep the code.

Every public name of the stdlib module is here with the same signature and
behaviour, and the server speaks the stdlib's wire protocol, so stdlib clients
and servers of CPython 3.8 to 3.13 interoperate with distproc ones.

The differences, all deliberate (the README has the full table):

* ``authkey`` may be a ``str``; it is encoded as UTF-8 (the stdlib raises
  ``TypeError``), so Python 2 era code such as the seed's ``authkey='lihui'``
  runs unchanged;
* the server is one event loop (see :mod:`distproc.server.core`), with limits:
  frames over ``config.max_frame`` (64 MiB) are refused, silent peers are
  dropped after ``config.handshake_timeout`` (10 s);
* ``start()`` under the ``spawn`` or ``forkserver`` start method checks first
  that the registry can be sent to the child, and says what to change if not;
* ``shutdown()`` exists (and does nothing) on a manager that was never
  started, instead of raising ``AttributeError``;
* the keyword-only ``config`` argument takes a
  :class:`~distproc.server.ServerConfig`;
* the keyword-only ``tls`` argument takes a :class:`~distproc.tls.TLSConfig`:
  the manager connects with TLS, and the server it starts requires it
  (unless ``config.tls`` says otherwise).
"""

from __future__ import annotations

import array
import dataclasses
import multiprocessing
import multiprocessing.connection as _mp_connection
import queue
import signal
import threading
from collections.abc import Callable, Sequence
from multiprocessing import pool, process, util
from multiprocessing.context import (
    BaseContext,
    ProcessError as ProcessError,
    get_spawning_popen as get_spawning_popen,
)
from multiprocessing.reduction import ForkingPickler
from os import getpid as getpid
from traceback import format_exc as format_exc
from typing import TYPE_CHECKING, Any, ClassVar

from .client.connection import (
    Connection,
    convert_to_error as convert_to_error,
    dispatch as dispatch,
)
from .client.mux import Multiplexer
from .client.mux_cache import close_multiplexers, get_multiplexer
from .errors import RemoteError as RemoteError, StartError
from .proxies import (
    AcquirerProxy as AcquirerProxy,
    ArrayProxy as ArrayProxy,
    AutoProxy as AutoProxy,
    BarrierProxy as BarrierProxy,
    BaseListProxy as BaseListProxy,
    BasePoolProxy as BasePoolProxy,
    BaseProxy as BaseProxy,
    ConditionProxy as ConditionProxy,
    DictProxy as DictProxy,
    EventProxy as EventProxy,
    IteratorProxy as IteratorProxy,
    ListProxy as ListProxy,
    MakeProxyType as MakeProxyType,
    NamespaceProxy as NamespaceProxy,
    PoolProxy as PoolProxy,
    ProcessLocalSet as ProcessLocalSet,
    RebuildProxy as RebuildProxy,
    ValueProxy as ValueProxy,
    adopt_proxy,
    client_factory,
)
from .server import ServerConfig
from .server.core import Server as Server
from .server.objects import all_methods as all_methods, public_methods as public_methods
from .server.shared_memory_server import SharedMemoryServer as SharedMemoryServer
from .server.sync_types import Array as Array, Namespace as Namespace, Value as Value
from .wire.messages import KIND_RETURN, Token as Token

try:
    from multiprocessing import shared_memory

    HAS_SHMEM = True
except ImportError:  # pragma: no cover - every supported platform has it
    HAS_SHMEM = False

from multiprocessing import get_context as get_context

if TYPE_CHECKING:
    from .tls import TLSConfig

__all__ = ["BaseManager", "BaseProxy", "SharedMemoryManager", "SyncManager", "Token"]

# typeshed lacks AuthenticationString; it exists on every version.
_AuthenticationString: Any = getattr(process, "AuthenticationString")  # noqa: B009


def reduce_array(a: array.array[Any]) -> tuple[Any, ...]:
    return array.array, (a.typecode, a.tobytes())


def rebuild_as_list(obj: Any) -> tuple[Any, ...]:
    return list, (list(obj),)


view_types = [type(getattr({}, name)()) for name in ("items", "keys", "values")]

#: serializer name -> (listener class, client function), as in the stdlib.
listener_client: dict[str, tuple[Any, Callable[..., Connection]]] = {
    "pickle": (_mp_connection.Listener, client_factory("pickle")),
    "xmlrpclib": (getattr(_mp_connection, "XmlListener"), client_factory("xmlrpclib")),  # noqa: B009
    # distproc's own: the native protocol only, never pickle (see distproc.wire.native).
    "native": (None, client_factory("native")),
}


class State:
    __slots__ = ["value"]
    INITIAL = 0
    STARTED = 1
    SHUTDOWN = 2

    def __init__(self) -> None:
        self.value = State.INITIAL


def _authkey_bytes(authkey: Any) -> bytes:
    if isinstance(authkey, str):
        return authkey.encode("utf-8")
    if isinstance(authkey, (bytes, bytearray, memoryview)):
        return bytes(authkey)
    raise TypeError(
        f"authkey must be bytes (or a str, encoded as UTF-8), not {type(authkey).__name__}"
    )


def _unpicklable_entries(registry: dict[str, Any]) -> list[str]:
    bad = []
    for typeid, entry in registry.items():
        try:
            ForkingPickler.dumps(entry)
        except Exception as exc:
            what = entry[0]
            name = getattr(what, "__qualname__", repr(what))
            bad.append(f"{typeid!r} -> {name} ({type(exc).__name__}: {exc})")
    return bad


class BaseManager:
    """Base class for managers: a server process holding shared objects."""

    _registry: ClassVar[dict[str, tuple[Any, Any, Any, Any]]] = {}
    _Server: ClassVar[type[Server]] = Server

    def __init__(
        self,
        address: Any = None,
        authkey: bytes | str | None = None,
        serializer: str = "pickle",
        ctx: BaseContext | None = None,
        *,
        shutdown_timeout: float = 1.0,
        config: ServerConfig | None = None,
        tls: TLSConfig | None = None,
    ) -> None:
        if tls is not None and serializer not in ("pickle", "native"):
            raise ValueError(
                f"tls= needs serializer 'pickle' or 'native' (distproc's native protocol), "
                f"not {serializer!r}"
            )
        if tls is not None and (config is None or config.tls is None):
            # The server this manager starts (start(), get_server()) requires the same TLS.
            config = dataclasses.replace(config or ServerConfig(), tls=tls)
        if authkey is None:
            authkey = process.current_process().authkey
        if serializer not in listener_client:
            raise ValueError(f"unknown serializer {serializer!r}")
        self._address = address
        self._authkey = _AuthenticationString(_authkey_bytes(authkey))
        self._state = State()
        self._serializer = serializer
        self._Listener, self._Client = listener_client[serializer]
        # Asked before get_context(), which fixes the start method as a side effect.
        self._ctx_chosen = ctx is not None or multiprocessing.get_start_method(True) is not None
        self._ctx = ctx or get_context()
        self._shutdown_timeout = shutdown_timeout
        self._config = config
        self._tls = tls
        self._process: Any = None
        self._finalizer: util.Finalize | None = None

    @property
    def address(self) -> Any:
        return self._address

    def get_server(self) -> Server:
        """The server object, to run in this process with ``serve_forever()``."""
        if self._state.value != State.INITIAL:
            if self._state.value == State.STARTED:
                raise ProcessError("Already started server")
            if self._state.value == State.SHUTDOWN:
                raise ProcessError("Manager has shut down")
            raise ProcessError(f"Unknown state {self._state.value!r}")
        return self._Server(
            self._registry,
            self._address,
            bytes(self._authkey),
            self._serializer,
            config=self._config,
        )

    def _native(self) -> Multiplexer | None:
        return get_multiplexer(
            self._address, bytes(self._authkey), self._serializer, tls=self._tls
        )

    # distproc's own, for programs such as ``distproc status``; the stdlib's
    # BaseManager has none of these.
    def server_protocol(self) -> str:
        """How this manager talks to its server: ``'native'`` (a distproc server) or
        ``'stdlib'``.  It connects on first use, with the errors of :meth:`connect`."""
        return "stdlib" if self._native() is None else "native"

    def server_call(self, method: str, /, *args: Any, **kwds: Any) -> Any:
        """Call server method ``method`` (``status``, ``debug_info``,
        ``number_of_objects``...) and return its result; on the native connection
        when the server is distproc's, else on a connection of its own."""
        mux = self._native()
        if mux is None:
            with self._Client(self._address, authkey=self._authkey) as conn:
                return dispatch(conn, None, method, args, kwds)
        kind, value = mux.call(None, method, args, kwds)
        if kind != KIND_RETURN:
            raise convert_to_error(kind, value)
        return value

    def close_connections(self) -> None:
        """Close this process's native connections to the server (the next call opens one)."""
        close_multiplexers(self._address)

    def connect(self) -> None:
        """Connect to a manager's server that already runs (at ``address``)."""
        self.server_call("dummy")
        self._state.value = State.STARTED

    def start(
        self, initializer: Callable[..., Any] | None = None, initargs: Sequence[Any] = ()
    ) -> None:
        """Start a child process that runs the server."""
        if self._state.value != State.INITIAL:
            if self._state.value == State.STARTED:
                raise ProcessError("Already started server")
            if self._state.value == State.SHUTDOWN:
                raise ProcessError("Manager has shut down")
            raise ProcessError(f"Unknown state {self._state.value!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        ctx = self._start_context()
        reader, writer = _mp_connection.Pipe(duplex=False)
        self._process = ctx.Process(  # type: ignore[attr-defined]  # every context has Process
            target=type(self)._run_server,
            args=(
                self._registry,
                self._address,
                bytes(self._authkey),
                self._serializer,
                writer,
                initializer,
                initargs,
                self._config,
            ),
        )
        ident = ":".join(str(i) for i in self._process._identity)
        self._process.name = type(self).__name__ + "-" + ident
        self._process.start()
        writer.close()
        try:
            status, value = reader.recv()
        except EOFError:
            self._process.join(self._shutdown_timeout)
            raise StartError(
                f"the server process of {type(self).__name__} exited before it was ready "
                f"(exit code {self._process.exitcode})"
            ) from None
        finally:
            reader.close()
        if status != "ok":
            self._process.join(self._shutdown_timeout)
            raise StartError(f"the server process of {type(self).__name__} failed: {value}")
        self._address = value
        self._state.value = State.STARTED
        self._finalizer = util.Finalize(
            self,
            type(self)._finalize_manager,
            args=(
                self._process,
                self._address,
                self._authkey,
                self._state,
                self._Client,
                self._shutdown_timeout,
            ),
            exitpriority=0,
        )

    def _start_context(self) -> BaseContext:
        """The context to start the server with, or a StartError saying what to change.

        A registry with lambdas or closures (the seed's pattern) can only reach
        the server process by fork.  When nobody chose a start method (no
        ``ctx``, no ``set_start_method``) and fork exists, fork is used; when
        spawn or forkserver was chosen, the error names what cannot be sent.
        """
        method = self._ctx.get_start_method()
        if method == "fork":
            return self._ctx
        bad = _unpicklable_entries(self._registry)
        if not bad:
            return self._ctx
        if not self._ctx_chosen and "fork" in multiprocessing.get_all_start_methods():
            return get_context("fork")
        raise StartError(
            f"{type(self).__name__}.start() cannot send its registry to a server "
            f"process made with the {method!r} start method, which pickles it: "
            + "; ".join(bad)
            + ". Register a module-level function instead of a lambda or closure "
            "(e.g. def get_task_queue(): return task_queue), or start the server "
            "with the fork start method: pass ctx=multiprocessing.get_context('fork')."
        )

    @classmethod
    def _run_server(
        cls,
        registry: dict[str, Any],
        address: Any,
        authkey: bytes,
        serializer: str,
        writer: Any,
        initializer: Callable[..., Any] | None = None,
        initargs: Sequence[Any] = (),
        config: ServerConfig | None = None,
    ) -> None:
        # Ctrl-C in the terminal goes to the whole process group: the parent
        # decides when its manager stops, not the signal.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if initializer is not None:
                initializer(*initargs)
            server = cls._Server(registry, address, authkey, serializer, config=config)
        except Exception as exc:
            writer.send(("error", f"{type(exc).__name__}: {exc}"))
            writer.close()
            return
        writer.send(("ok", server.address))
        writer.close()
        server.serve_forever()

    def _create(self, typeid: str, /, *args: Any, **kwds: Any) -> tuple[Token, tuple[str, ...]]:
        """Create a new shared object; return its token and exposed methods."""
        ident, exposed, *_ = self.server_call("create", typeid, *args, **kwds)
        return Token(typeid, self._address, ident), exposed

    def _make_proxy(self, typeid: str, proxytype: Any, args: Any, kwds: Any) -> Any:
        """Create a shared object and its proxy: one round trip on a native connection."""
        if self._native() is None:
            token, exp = self._create(typeid, *args, **kwds)
            proxy = proxytype(
                token, self._serializer, manager=self, authkey=self._authkey, exposed=exp
            )
            with self._Client(token.address, authkey=self._authkey) as conn:
                dispatch(conn, None, "decref", (token.id,))
            return proxy
        ident, exposed, hints = self.server_call("create", typeid, *args, **kwds)
        token = Token(typeid, self._address, ident)
        return adopt_proxy(
            proxytype, token, self._serializer, self, self._authkey, exposed, hints.get("defer", ())
        )

    def join(self, timeout: float | None = None) -> None:
        """Wait for the server process to exit."""
        if self._process is not None:
            self._process.join(timeout)
            if not self._process.is_alive():
                self._process = None

    def _debug_info(self) -> str:
        return str(self.server_call("debug_info"))

    def _number_of_objects(self) -> int:
        return int(self.server_call("number_of_objects"))

    def shutdown(self) -> None:
        """Stop the server process started by :meth:`start`; safe to call again."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> BaseManager:
        if self._state.value == State.INITIAL:
            self.start()
        if self._state.value != State.STARTED:
            raise ProcessError(
                {
                    State.INITIAL: "Unable to start server",
                    State.SHUTDOWN: "Manager has shut down",
                }.get(self._state.value, "bad state")
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @staticmethod
    def _finalize_manager(
        process: Any,
        address: Any,
        authkey: bytes,
        state: State,
        _Client: Callable[..., Connection],
        shutdown_timeout: float,
    ) -> None:
        if process.is_alive():
            try:
                with _Client(address, authkey=authkey) as conn:
                    dispatch(conn, None, "shutdown")
            except Exception:
                pass
            process.join(timeout=shutdown_timeout)
            if process.is_alive():
                process.terminate()
                process.join(timeout=shutdown_timeout)
                if process.is_alive():
                    process.kill()
                    process.join()
        state.value = State.SHUTDOWN
        BaseProxy._address_to_local.pop(address, None)
        close_multiplexers(address)

    @classmethod
    def register(
        cls,
        typeid: str,
        callable: Callable[..., Any] | None = None,
        proxytype: Any = None,
        exposed: Sequence[str] | None = None,
        method_to_typeid: dict[str, str] | None = None,
        create_method: bool = True,
    ) -> None:
        """Register a type or callable with the manager class."""
        if "_registry" not in cls.__dict__:
            cls._registry = cls._registry.copy()
        if proxytype is None:
            proxytype = AutoProxy
        exposed = exposed or getattr(proxytype, "_exposed_", None)
        method_to_typeid = method_to_typeid or getattr(proxytype, "_method_to_typeid_", None)
        if method_to_typeid:
            for key, value in method_to_typeid.items():
                if type(key) is not str or type(value) is not str:
                    raise TypeError(f"method_to_typeid must map str to str, not {key!r}: {value!r}")
        cls._registry[typeid] = (callable, exposed, method_to_typeid, proxytype)
        if create_method:

            def create(self: BaseManager, /, *args: Any, **kwds: Any) -> Any:
                return self._make_proxy(typeid, proxytype, args, kwds)

            create.__name__ = typeid
            create.__qualname__ = f"{cls.__qualname__}.{typeid}"
            setattr(cls, typeid, create)


# ---------------------------------------------------------------- SyncManager
class SyncManager(BaseManager):
    """A manager with the shared types of ``multiprocessing.Manager()``."""

    # The methods that register() adds below, declared for type checkers.
    Queue: Callable[..., Any]
    JoinableQueue: Callable[..., Any]
    Event: Callable[..., EventProxy]
    Lock: Callable[..., AcquirerProxy]
    RLock: Callable[..., AcquirerProxy]
    Semaphore: Callable[..., AcquirerProxy]
    BoundedSemaphore: Callable[..., AcquirerProxy]
    Condition: Callable[..., ConditionProxy]
    Barrier: Callable[..., BarrierProxy]
    Pool: Callable[..., Any]
    list: Callable[..., Any]
    dict: Callable[..., Any]
    Value: Callable[..., ValueProxy]
    Array: Callable[..., Any]
    Namespace: Callable[..., NamespaceProxy]


SyncManager.register("Queue", queue.Queue)
SyncManager.register("JoinableQueue", queue.Queue)
SyncManager.register("Event", threading.Event, EventProxy)
SyncManager.register("Lock", threading.Lock, AcquirerProxy)
SyncManager.register("RLock", threading.RLock, AcquirerProxy)
SyncManager.register("Semaphore", threading.Semaphore, AcquirerProxy)
SyncManager.register("BoundedSemaphore", threading.BoundedSemaphore, AcquirerProxy)
SyncManager.register("Condition", threading.Condition, ConditionProxy)
SyncManager.register("Barrier", threading.Barrier, BarrierProxy)
SyncManager.register("Pool", pool.Pool, PoolProxy)
SyncManager.register("list", list, ListProxy)
SyncManager.register("dict", dict, DictProxy)
SyncManager.register("Value", Value, ValueProxy)
SyncManager.register("Array", Array, ArrayProxy)
SyncManager.register("Namespace", Namespace, NamespaceProxy)
SyncManager.register("Iterator", proxytype=IteratorProxy, create_method=False)
SyncManager.register("AsyncResult", create_method=False)


# ------------------------------------------------------- SharedMemoryManager
class SharedMemoryManager(BaseManager):
    """A manager that hands out shared memory blocks and unlinks them at shutdown."""

    _Server = SharedMemoryServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
        super().__init__(*args, **kwargs)

    def SharedMemory(self, size: int) -> shared_memory.SharedMemory:
        """A new shared memory block of ``size`` bytes, tracked by the server."""
        with self._Client(self._address, authkey=self._authkey) as conn:
            sms = shared_memory.SharedMemory(None, create=True, size=size)
            try:
                dispatch(conn, None, "track_segment", (sms.name,))
            except BaseException:
                sms.unlink()
                raise
        return sms

    def ShareableList(self, sequence: Any) -> shared_memory.ShareableList[Any]:
        """A new ShareableList holding ``sequence``, tracked by the server."""
        with self._Client(self._address, authkey=self._authkey) as conn:
            sl = shared_memory.ShareableList(sequence)
            try:
                dispatch(conn, None, "track_segment", (sl.shm.name,))
            except BaseException:
                sl.shm.unlink()
                raise
        return sl

