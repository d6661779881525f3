"""The typed proxies of ``multiprocessing.managers``: one class per kind of referent.

``SyncManager`` registers them for its types (``EventProxy`` for an
``Event``, ``ListProxy`` for a list, ...), with the methods and exposed names
of the stdlib's.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from typing import Any, ClassVar

from ..wire.proxy_methods import ARRAY_METHODS, DICT_METHODS, LIST_METHODS
from .base import BaseProxy, MakeProxyType

__all__ = [
    "AcquirerProxy",
    "ArrayProxy",
    "BarrierProxy",
    "BaseListProxy",
    "BasePoolProxy",
    "ConditionProxy",
    "DictProxy",
    "EventProxy",
    "IteratorProxy",
    "ListProxy",
    "NamespaceProxy",
    "PoolProxy",
    "ValueProxy",
]


class IteratorProxy(BaseProxy):
    _exposed_: ClassVar[tuple[str, ...]] = ("__next__", "send", "throw", "close")

    def __iter__(self) -> IteratorProxy:
        return self

    def __next__(self, *args: Any) -> Any:
        return self._callmethod("__next__", args)

    def send(self, *args: Any) -> Any:
        return self._callmethod("send", args)

    def throw(self, *args: Any) -> Any:
        return self._callmethod("throw", args)

    def close(self, *args: Any) -> Any:
        return self._callmethod("close", args)


class AcquirerProxy(BaseProxy):
    _exposed_: ClassVar[tuple[str, ...]] = ("acquire", "release")

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> Any:
        args = (blocking,) if timeout is None else (blocking, timeout)
        return self._callmethod("acquire", args)

    def release(self) -> Any:
        return self._callmethod("release")

    def __enter__(self) -> Any:
        return self._callmethod("acquire")

    def __exit__(self, *exc: object) -> Any:
        return self._callmethod("release")


class ConditionProxy(AcquirerProxy):
    _exposed_: ClassVar[tuple[str, ...]] = ("acquire", "release", "wait", "notify", "notify_all")

    def wait(self, timeout: float | None = None) -> Any:
        return self._callmethod("wait", (timeout,))

    def notify(self, n: int = 1) -> Any:
        return self._callmethod("notify", (n,))

    def notify_all(self) -> Any:
        return self._callmethod("notify_all")

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        result = predicate()
        if result:
            return result
        deadline = None if timeout is None else time.monotonic() + timeout
        while not result:
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
            self.wait(remaining)
            result = predicate()
        return result


class EventProxy(BaseProxy):
    _exposed_: ClassVar[tuple[str, ...]] = ("is_set", "set", "clear", "wait")

    def is_set(self) -> Any:
        return self._callmethod("is_set")

    def set(self) -> Any:
        return self._callmethod("set")

    def clear(self) -> Any:
        return self._callmethod("clear")

    def wait(self, timeout: float | None = None) -> Any:
        return self._callmethod("wait", (timeout,))


class BarrierProxy(BaseProxy):
    _exposed_: ClassVar[tuple[str, ...]] = ("__getattribute__", "wait", "abort", "reset")

    def wait(self, timeout: float | None = None) -> Any:
        return self._callmethod("wait", (timeout,))

    def abort(self) -> Any:
        return self._callmethod("abort")

    def reset(self) -> Any:
        return self._callmethod("reset")

    @property
    def parties(self) -> Any:
        return self._callmethod("__getattribute__", ("parties",))

    @property
    def n_waiting(self) -> Any:
        return self._callmethod("__getattribute__", ("n_waiting",))

    @property
    def broken(self) -> Any:
        return self._callmethod("__getattribute__", ("broken",))


class NamespaceProxy(BaseProxy):
    _exposed_: ClassVar[tuple[str, ...]] = ("__getattribute__", "__setattr__", "__delattr__")

    def __getattr__(self, key: str) -> Any:
        if key[0] == "_":
            return object.__getattribute__(self, key)
        callmethod = object.__getattribute__(self, "_callmethod")
        return callmethod("__getattribute__", (key,))

    def __setattr__(self, key: str, value: Any) -> None:
        if key[0] == "_":
            object.__setattr__(self, key, value)
            return
        callmethod = object.__getattribute__(self, "_callmethod")
        callmethod("__setattr__", (key, value))

    def __delattr__(self, key: str) -> None:
        if key[0] == "_":
            object.__delattr__(self, key)
            return
        callmethod = object.__getattribute__(self, "_callmethod")
        callmethod("__delattr__", (key,))


class ValueProxy(BaseProxy):
    _exposed_: ClassVar[tuple[str, ...]] = ("get", "set")

    def get(self) -> Any:
        return self._callmethod("get")

    def set(self, value: Any) -> Any:
        return self._callmethod("set", (value,))

    value = property(get, set)
    __class_getitem__: Any = classmethod(types.GenericAlias)


BaseListProxy = MakeProxyType("BaseListProxy", LIST_METHODS)


class ListProxy(BaseListProxy):  # type: ignore[misc,valid-type]  # a class made at run time
    def __iadd__(self, value: Any) -> ListProxy:
        self._callmethod("extend", (value,))
        return self

    def __imul__(self, value: Any) -> ListProxy:
        self._callmethod("__imul__", (value,))
        return self

    __class_getitem__: Any = classmethod(types.GenericAlias)


_BaseDictProxy = MakeProxyType("DictProxy", DICT_METHODS)
_BaseDictProxy._method_to_typeid_ = {"__iter__": "Iterator"}


class DictProxy(_BaseDictProxy):  # type: ignore[misc,valid-type]  # a class made at run time
    __class_getitem__: Any = classmethod(types.GenericAlias)


ArrayProxy = MakeProxyType("ArrayProxy", ARRAY_METHODS)

BasePoolProxy = MakeProxyType(
    "PoolProxy",
    (
        "apply",
        "apply_async",
        "close",
        "imap",
        "imap_unordered",
        "join",
        "map",
        "map_async",
        "starmap",
        "starmap_async",
        "terminate",
    ),
)
BasePoolProxy._method_to_typeid_ = {
    "apply_async": "AsyncResult",
    "map_async": "AsyncResult",
    "starmap_async": "AsyncResult",
    "imap": "Iterator",
    "imap_unordered": "Iterator",
}


class PoolProxy(BasePoolProxy):  # type: ignore[misc,valid-type]  # a class made at run time
    def __enter__(self) -> PoolProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()


