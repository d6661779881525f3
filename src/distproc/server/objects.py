"""The object table: what a server holds, under stable ids, with refcounts.

Ids are hex strings of a counter (``'1'``, ``'2'``, ...), never ``id()``:
an id is never reused while the server runs, so a stale proxy can only miss,
never reach another object.  An entry lives while its refcount is above zero.
A proxy unpickled inside the server itself (a nested proxy: a dict stored in
a list) holds one reference for as long as it lives, and gives it back when
it is collected; the stdlib instead keeps such objects forever
(``id_to_local_proxy_obj``, CPython issue #103136).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Entry", "ObjectTable", "all_methods", "public_methods"]


def all_methods(obj: Any) -> list[str]:
    """Names of the callable attributes of ``obj``."""
    names = []
    for name in dir(obj):
        try:
            if callable(getattr(obj, name)):
                names.append(name)
        except Exception:
            continue
    return names


def public_methods(obj: Any) -> list[str]:
    """Names of the callable attributes of ``obj`` that do not start with ``_``."""
    return [name for name in all_methods(obj) if name[0] != "_"]


@dataclass(slots=True)
class Entry:
    obj: Any
    exposed: frozenset[str]
    exposed_order: tuple[str, ...]
    method_to_typeid: dict[str, str] | None
    typeid: str
    #: How calls to ``obj`` are served, worked out on its first call (see ``calls.serving``).
    serving: tuple[frozenset[str], bool] | None = None


class ObjectTable:
    """Thread-safe id → object map with refcounts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self.entries: dict[str, Entry] = {}
        self.refcounts: dict[str, int] = {}

    def add(
        self,
        obj: Any,
        typeid: str,
        exposed: Iterable[str],
        method_to_typeid: dict[str, str] | None,
    ) -> tuple[str, tuple[str, ...]]:
        order = tuple(exposed)
        entry = Entry(obj, frozenset(order), order, method_to_typeid, typeid)
        with self._lock:
            ident = format(next(self._counter), "x")
            self.entries[ident] = entry
            self.refcounts[ident] = 1
        return ident, order

    def get(self, ident: str) -> Entry:
        entry = self.entries.get(ident)
        if entry is None:
            raise KeyError(f"no shared object with id {ident!r}")
        return entry

    def incref(self, ident: str) -> None:
        with self._lock:
            if ident not in self.refcounts:
                raise KeyError(f"no shared object with id {ident!r}")
            self.refcounts[ident] += 1

    def decref(self, ident: str) -> Entry | None:
        """Drop one reference; return the entry if that was the last one."""
        with self._lock:
            count = self.refcounts.get(ident)
            if count is None:
                raise KeyError(f"no shared object with id {ident!r}")
            if count > 1:
                self.refcounts[ident] = count - 1
                return None
            del self.refcounts[ident]
            return self.entries.pop(ident, None)

    def __len__(self) -> int:
        return len(self.refcounts)

    def snapshot(self) -> list[tuple[str, Entry, int]]:
        """``(id, entry, refcount)`` of every live object, in id order."""
        with self._lock:
            items = [
                (ident, self.entries[ident], count)
                for ident, count in self.refcounts.items()
                if ident in self.entries
            ]
        items.sort(key=lambda item: int(item[0], 16))
        return items

    def debug_info(self, describe: Callable[[Any], str] = repr) -> str:
        with self._lock:
            items = sorted(self.refcounts.items(), key=lambda kv: int(kv[0], 16))
            lines = []
            for ident, count in items:
                entry = self.entries.get(ident)
                text = describe(entry.obj)[:75] if entry is not None else "?"
                lines.append(f"  {ident}:       refcount={count}\n    {text}")
        return "\n".join(lines)
