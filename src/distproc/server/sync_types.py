"""The referents that only a manager's server holds: ``Namespace``, ``Value``, ``Array``.

``SyncManager`` registers them (``manager.Namespace()``...), as the stdlib's
does; the objects themselves live in the server, and clients reach them
through ``NamespaceProxy``, ``ValueProxy`` and ``ArrayProxy``.  On the wire they
are written under their ``multiprocessing.managers`` names (a ``#GETVALUE``
of a namespace reaches a stdlib client as the stdlib's ``Namespace``), and
those names are read back as these classes.
"""

from __future__ import annotations

import array
from typing import Any

from ..wire.codecs import register_pickle_reducer, register_wire_name, wire_global

__all__ = ["Array", "Namespace", "Value"]


class Namespace:
    """A plain object with attributes, shared through a NamespaceProxy."""

    def __init__(self, /, **kwds: Any) -> None:
        self.__dict__.update(kwds)

    def __repr__(self) -> str:
        items = sorted(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({', '.join(items)})"


class Value:
    """A value with a typecode, shared through a ValueProxy."""

    def __init__(self, typecode: str, value: Any, lock: bool = True) -> None:
        self._typecode = typecode
        self._value = value

    def get(self) -> Any:
        return self._value

    def set(self, value: Any) -> None:
        self._value = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._typecode!r}, {self._value!r})"

    value = property(get, set)


def Array(typecode: str, sequence: Any, lock: bool = True) -> array.array[Any]:
    return array.array(typecode, sequence)


register_pickle_reducer(Namespace, lambda ns: (wire_global(Namespace), (), dict(ns.__dict__)))
register_pickle_reducer(Value, lambda v: (wire_global(Value), (v._typecode, v._value)))
register_wire_name("multiprocessing.managers", "Namespace", Namespace)
register_wire_name("multiprocessing.managers", "Value", Value)
