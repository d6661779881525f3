"""Decoding: plain msgpack data in, the values it stands for out, and nothing ever run.

msgpack decodes its own types itself.  An ext value becomes a tag
(:mod:`.tags`), and the array that a tag heads becomes the value it stands
for, built from plain decoded fields by the type's decoder in
:data:`DECODERS`, which checks them first.  Nothing is imported, unpickled or
evaluated; an exception is instantiated only when its type is a builtin one
or one registered by name (:data:`EXC_BY_NAME`), and any other arrives as a
:class:`~distproc.errors.RemoteError` carrying ``"module.Type: message"``.

A payload decodes to at most ``max_items`` values: each item of an array or
a map counts one, and each array or map :data:`CONTAINER_COST` more, since an
empty array is one byte on the wire and some 60 in memory (a payload of
nothing else would expand sixty-fold).  msgpack checks each container's
length against the budget before allocating it, and in a payload larger than
:data:`COUNTED` bytes the hooks count what was built.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import decimal
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type stubs

from ...errors import ProtocolError, RemoteError
from ..codecs import BytesLike
from ..messages import Token
from .tags import LIVE, TUPLE, TUPLE_DECODED, Tag, check, refuse_tags

__all__ = [
    "BUILTIN_EXCEPTIONS",
    "CONTAINER_COST",
    "COUNTED",
    "DECODERS",
    "EXC_BY_NAME",
    "decode_bytearray",
    "decode_complex",
    "decode_date",
    "decode_datetime",
    "decode_decimal",
    "decode_exception",
    "decode_frozenset",
    "decode_int",
    "decode_set",
    "decode_time",
    "decode_timedelta",
    "decode_token",
    "decode_tuple",
    "decode_uuid",
    "loads",
    "user_decoder",
]

#: ext code -> function building the value from its tagged array (tag included).
DECODERS: dict[int, Callable[[list[Any]], Any]] = {}
#: Exception classes that loads may instantiate, by the name they travel under.
EXC_BY_NAME: dict[str, type[BaseException]] = {
    f"builtins.{name}": obj
    for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, BaseException)
}
BUILTIN_EXCEPTIONS: Final = frozenset(EXC_BY_NAME.values())

_unpackb = msgpack.unpackb
#: Payloads up to this size cannot expand past a few megabytes: their values are not counted.
COUNTED: Final = 64 * 1024
#: What one array or map counts for, besides its items (its memory is some
#: eight pointers' worth).
CONTAINER_COST: Final = 8


def loads(data: BytesLike, max_items: int | None = None) -> Any:
    """Decode ``data``; :class:`~distproc.errors.ProtocolError` if it is malformed
    or decodes to more than ``max_items`` values (``None``: as many as it holds)."""
    list_hook: Callable[[list[Any]], Any] = _list_hook
    object_hook: Callable[[dict[Any, Any]], Any] | None = None
    if max_items is None:
        max_items = len(data)  # msgpack's own bound: no container is longer than its payload
    elif len(data) > COUNTED:
        list_hook, object_hook = _counting_hooks(max_items)
    try:
        obj = _unpackb(
            data,
            ext_hook=_ext_hook,
            list_hook=list_hook,
            object_hook=object_hook,
            raw=False,
            strict_map_key=False,
            timestamp=3,
            max_array_len=max_items,
            max_map_len=max_items,
        )
    except Exception as exc:
        # Drop the traceback: its frames would keep decoded tags alive.
        raise ProtocolError(
            f"malformed native payload: {type(exc).__name__}: {exc}"
        ) from exc.with_traceback(None)
    check(obj)
    return obj


def _counting_hooks(
    limit: int,
) -> tuple[Callable[[list[Any]], Any], Callable[[dict[Any, Any]], Any]]:
    """msgpack hooks that count the values built, and stop past ``limit``."""
    left = limit

    def spend(n: int) -> None:
        nonlocal left
        left -= n
        if left < 0:
            raise ValueError(f"the payload decodes to more than {limit} values")

    def list_hook(items: list[Any]) -> Any:
        spend(len(items) + CONTAINER_COST)
        return _list_hook(items)

    def object_hook(items: dict[Any, Any]) -> Any:
        spend(2 * len(items) + CONTAINER_COST)
        return items

    return list_hook, object_hook


def _ext_hook(code: int, data: bytes) -> Tag:
    if code == TUPLE and not data:
        return TUPLE_DECODED
    decoder = DECODERS.get(code)
    if decoder is None:
        raise ValueError(f"unknown ext code {code}")
    if data:
        raise ValueError(f"ext code {code} with a payload")
    return Tag((decoder, LIVE))


def _list_hook(items: list[Any]) -> Any:
    if items:
        head = items[0]
        if head is TUPLE_DECODED:
            del items[0]
            return tuple(items)
        if type(head) is Tag:
            return head[0](items)
    return items


def user_decoder(decode: Callable[[Any], Any]) -> Callable[[list[Any]], Any]:
    """The entry of :data:`DECODERS` for a type registered with ``decode``."""

    def decoder(items: list[Any]) -> Any:
        _expect(items, 2)
        value = items[1]
        refuse_tags(value)
        return decode(value)

    return decoder


def decode_exception(items: list[Any]) -> BaseException:
    if len(items) < 3:
        raise ValueError("malformed exception: missing its name or message")
    name, message = items[1], items[2]
    if type(name) is not str or type(message) is not str:
        raise ValueError("malformed exception: name and message must be str")
    args = items[3:]
    cls = EXC_BY_NAME.get(name)
    if cls is not None:
        refuse_tags(args)
        try:
            return cls(*args)
        except Exception:
            pass  # its constructor wants other arguments: report it as remote
    return RemoteError(f"{name}: {message}" if message else name)


# ---------------------------------------------------------------------------
# The built-in types (registered by .registry).


def _expect(items: list[Any], n: int) -> None:
    if len(items) != n:
        raise ValueError(f"malformed ext value: {len(items) - 1} fields, expected {n - 1}")


def _ints(values: Iterable[Any]) -> None:
    if not all(type(v) is int for v in values):
        raise ValueError("malformed ext value: expected integer fields")


def _decode_tz(offset: Any, name: Any) -> _dt.timezone:
    if type(offset) is not int or not (name is None or type(name) is str):
        raise ValueError("malformed UTC offset")
    delta = _dt.timedelta(microseconds=offset)
    return _dt.timezone(delta) if name is None else _dt.timezone(delta, name)


def decode_tuple(items: list[Any]) -> tuple[Any, ...]:
    # Never called (_ext_hook and _list_hook handle tuples themselves): the entry
    # reserves the code.
    del items[0]
    return tuple(items)


def decode_set(items: list[Any]) -> set[Any]:
    del items[0]
    return set(items)


def decode_frozenset(items: list[Any]) -> frozenset[Any]:
    del items[0]
    return frozenset(items)


def _bin_field(items: list[Any]) -> bytes:
    _expect(items, 2)
    value = items[1]
    if type(value) is not bytes:
        raise ValueError("malformed ext value: expected bin")
    return value


def decode_bytearray(items: list[Any]) -> bytearray:
    return bytearray(_bin_field(items))


def decode_int(items: list[Any]) -> int:
    return int.from_bytes(_bin_field(items), "big", signed=True)


def decode_datetime(items: list[Any]) -> _dt.datetime:
    if len(items) == 11:
        tz: _dt.timezone | None = _decode_tz(items[9], items[10])
    else:
        _expect(items, 9)
        tz = None
    _ints(items[1:9])
    _, year, month, day, hour, minute, second, microsecond, fold = items[:9]
    return _dt.datetime(year, month, day, hour, minute, second, microsecond, tz, fold=fold)


def decode_date(items: list[Any]) -> _dt.date:
    _expect(items, 4)
    _ints(items[1:])
    return _dt.date(items[1], items[2], items[3])


def decode_time(items: list[Any]) -> _dt.time:
    if len(items) == 8:
        tz: _dt.timezone | None = _decode_tz(items[6], items[7])
    else:
        _expect(items, 6)
        tz = None
    _ints(items[1:6])
    _, hour, minute, second, microsecond, fold = items[:6]
    return _dt.time(hour, minute, second, microsecond, tz, fold=fold)


def decode_timedelta(items: list[Any]) -> _dt.timedelta:
    _expect(items, 4)
    _ints(items[1:])
    return _dt.timedelta(items[1], items[2], items[3])


def decode_decimal(items: list[Any]) -> decimal.Decimal:
    _expect(items, 2)
    if type(items[1]) is not str:
        raise ValueError("malformed Decimal")
    return decimal.Decimal(items[1])


def decode_uuid(items: list[Any]) -> uuid.UUID:
    return uuid.UUID(bytes=_bin_field(items))


def decode_complex(items: list[Any]) -> complex:
    _expect(items, 3)
    if type(items[1]) is not float or type(items[2]) is not float:
        raise ValueError("malformed complex")
    return complex(items[1], items[2])


def decode_token(value: Any) -> Token:
    """A :class:`Token` from its value (it is registered as a user type)."""
    if type(value) is not list or len(value) != 3:
        raise ValueError("malformed Token")
    typeid, address, ident = value
    if (
        type(typeid) is not str
        or not (ident is None or type(ident) is str)
        or type(address) not in (tuple, str)
    ):
        raise ValueError("malformed Token")
    return Token(typeid, address, ident)
