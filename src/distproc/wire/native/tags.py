"""Ext codes, and the tags they decode to: the check that no tag is left in a value.

The native codec writes every value msgpack does not know as a *tagged array*:
an array headed by an empty ext value whose code names the type.  Decoding an
ext value yields a tag (:class:`Tag`); msgpack's ``list_hook`` then sees the
array that the tag heads and replaces the whole array with the value it
stands for.  A tag anywhere else (a stray ext value, as a map key, in a tuple,
alone) is malformed input, and would otherwise reach the application as an
odd object.  The codec's safety argument rests on this: what ``loads``
returns holds only values built from plain data, never a tag.

Every tag refers to :data:`LIVE` (the tuple tag *is* :data:`TUPLE_DECODED`),
so a tag left in a result keeps a reference to one of them alive.  After each
decode, :func:`check` compares their reference counts with the counts seen
when nothing was left (the *baseline*); only when they differ (a stray tag, or
another thread decoding at that moment) does it walk the result to look.
"""

from __future__ import annotations

import sys
from typing import Any, Final

from ...errors import ProtocolError

__all__ = [
    "BIGINT",
    "BYTEARRAY",
    "COMPLEX",
    "DATE",
    "DATETIME",
    "DECIMAL",
    "EXCEPTION",
    "FROZENSET",
    "LIVE",
    "RESERVED_CODES",
    "SET",
    "TIME",
    "TIMEDELTA",
    "TOKEN",
    "TUPLE",
    "TUPLE_DECODED",
    "USER_CODES",
    "UUID",
    "Tag",
    "check",
    "has_tag",
    "refuse_tags",
]

#: Ext codes that applications may pass to :func:`register_type`.
USER_CODES: Final = range(0, 100)

#: Ext codes that belong to distproc (``register_type(..., reserved=True)``).
RESERVED_CODES: Final = range(100, 128)

TUPLE: Final = 100
SET: Final = 101
FROZENSET: Final = 102
BYTEARRAY: Final = 103
BIGINT: Final = 104
DATETIME: Final = 105
DATE: Final = 106
TIME: Final = 107
TIMEDELTA: Final = 108
DECIMAL: Final = 109
UUID: Final = 110
COMPLEX: Final = 111
EXCEPTION: Final = 112
TOKEN: Final = 113

_getrefcount = sys.getrefcount


class Tag(tuple[Any, object]):
    """What an ext value decodes to: (array decoder, :data:`LIVE`).

    The array that it heads replaces it on the spot.  A tag anywhere else is
    malformed input; it would keep a reference to :data:`LIVE` (or to
    :data:`TUPLE_DECODED`) alive, which :func:`check` notices in the reference
    counts and then looks for.
    """

    __slots__ = ()


#: What every tag but the tuple's refers to.
LIVE: Final = object()
#: The tag of every tuple (tuples are the commonest tagged value: one object for all).
TUPLE_DECODED: Final = Tag((None, LIVE))
_SEQUENCES: Final = frozenset({list, tuple, set, frozenset})
_WALK: Final = _SEQUENCES | {Tag, dict}


def has_tag(obj: Any) -> bool:
    """Whether a tag hides in ``obj`` (a decoded value), looking through containers
    and exception args.

    It walks without recursion and without a depth limit: a decoded value is a
    tree whose size its frame bounds, and msgpack decodes values nested 1023
    levels deep, deeper than the interpreter's stack would let a recursive
    search go.
    """
    todo: list[Any] = [obj]
    while todo:
        item = todo.pop()
        cls = type(item)
        if cls is Tag:
            return True
        if cls is dict:
            todo += [x for x in item if type(x) in _WALK]
            todo += [x for x in item.values() if type(x) in _WALK]
        elif cls in _SEQUENCES:
            todo += [x for x in item if type(x) in _WALK]
        elif isinstance(item, BaseException):
            todo.append(item.args)
    return False


def refuse_tags(value: Any) -> None:
    """Raise :class:`ValueError` if a tag hides in ``value`` (the fields of a tagged array)."""
    if type(value) in _WALK and has_tag(value):
        raise ValueError("ext tag outside the head of an array")


#: The fewest references to the tags seen after a decode: with no tag left over
#: (and no other thread decoding), the count found again.
_baseline = sys.maxsize


def check(obj: Any) -> None:
    """Raise :class:`~distproc.errors.ProtocolError` if a tag is left in ``obj``, a
    decoded value; cheap unless the tags' reference counts say to look."""
    refs = _getrefcount(TUPLE_DECODED) + _getrefcount(LIVE)
    if refs != _baseline:
        _look(obj, refs)


def _look(obj: Any, refs: int) -> None:
    global _baseline
    if has_tag(obj):
        raise ProtocolError("malformed native payload: ext tag outside the head of an array")
    # Either another thread is decoding right now (the count is higher), or
    # this is the first look (the count is lower).
    if refs < _baseline:
        _baseline = refs
