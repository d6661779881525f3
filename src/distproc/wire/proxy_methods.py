"""The methods that the stdlib's list, dict and array proxies call, in the stdlib's order.

They are part of the stdlib's protocol: a stdlib ``ListProxy`` sends exactly
these names, so distproc's proxies expose them and its server runs them on
the loop (the builtin containers' methods cannot block).
"""

from __future__ import annotations

__all__ = ["ARRAY_METHODS", "DICT_METHODS", "LIST_METHODS"]

LIST_METHODS = (
    "__add__", "__contains__", "__delitem__", "__getitem__", "__len__", "__mul__",
    "__reversed__", "__rmul__", "__setitem__", "append", "count", "extend", "index",
    "insert", "pop", "remove", "reverse", "sort", "__imul__",
)  # fmt: skip
DICT_METHODS = (
    "__contains__", "__delitem__", "__getitem__", "__iter__", "__len__", "__setitem__",
    "clear", "copy", "get", "items", "keys", "pop", "popitem", "setdefault", "update",
    "values",
)  # fmt: skip
ARRAY_METHODS = ("__len__", "__getitem__", "__setitem__")
