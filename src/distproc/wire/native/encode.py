"""Encoding: what the native codec hands msgpack in place of each value it does not know.

msgpack packs its own types itself, in C; everything else reaches
:func:`default`, which returns the value's tagged array (see :mod:`.tags`),
or is refused with a :class:`TypeError` that says what to do.  Lists and
dicts are looked into first (:func:`scrub`): they may hold a value that
msgpack would write wrong (a ``bytearray`` would come back as ``bytes``) or
not at all.  Each thread packs with a packer of its own (:func:`dumps`).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type stubs

from ..messages import Token
from .tags import (
    BIGINT,
    BYTEARRAY,
    COMPLEX,
    DATE,
    DATETIME,
    DECIMAL,
    EXCEPTION,
    FROZENSET,
    SET,
    TIME,
    TIMEDELTA,
    TUPLE,
    UUID,
)

__all__ = [
    "ENCODERS",
    "EXC_NAMES",
    "SUSPECT",
    "default",
    "dumps",
    "encode_complex",
    "encode_date",
    "encode_datetime",
    "encode_decimal",
    "encode_int",
    "encode_set",
    "encode_time",
    "encode_timedelta",
    "encode_token",
    "encode_uuid",
    "new_packer",
    "qualified",
    "scrub",
    "user_encoder",
]


_ExtType = msgpack.ExtType
_TUPLE_TAG: Final = _ExtType(TUPLE, b"")
_SET_TAG: Final = _ExtType(SET, b"")
_FROZENSET_TAG: Final = _ExtType(FROZENSET, b"")
_BYTEARRAY_TAG: Final = _ExtType(BYTEARRAY, b"")
_BIGINT_TAG: Final = _ExtType(BIGINT, b"")
_DATETIME_TAG: Final = _ExtType(DATETIME, b"")
_DATE_TAG: Final = _ExtType(DATE, b"")
_TIME_TAG: Final = _ExtType(TIME, b"")
_TIMEDELTA_TAG: Final = _ExtType(TIMEDELTA, b"")
_DECIMAL_TAG: Final = _ExtType(DECIMAL, b"")
_UUID_TAG: Final = _ExtType(UUID, b"")
_COMPLEX_TAG: Final = _ExtType(COMPLEX, b"")
_EXCEPTION_TAG: Final = _ExtType(EXCEPTION, b"")

#: Deepest list/dict nesting that dumps looks into (msgpack packs no deeper).
MAX_DEPTH: Final = 1000
#: A thread's packer keeps its largest buffer; :func:`dumps` drops it after a message this big.
KEEP_PACKER_UNDER: Final = 1 << 20
_BUF_SIZE: Final = 16 * 1024

#: exact type -> function returning the tagged array for a value of that type.
ENCODERS: dict[type, Callable[[Any], list[Any]]] = {}
#: Registered (non-builtin) exception classes -> the name they travel under.
EXC_NAMES: dict[type[BaseException], str] = {}

#: Types that msgpack packs natively but that must not reach it unseen: lists and
#: dicts may hold one of the others, a bytearray would come back as bytes, and the
#: rest are not supported (msgpack would write them as bin or as raw ext values).
SUSPECT: Final[frozenset[type]] = frozenset(
    {list, dict, bytearray, memoryview, msgpack.ExtType, msgpack.Timestamp}
    # msgpack.ext.Bypass (newer msgpack) writes its bytes as they are.
    | {cls for cls in [getattr(msgpack.ext, "Bypass", None)] if cls is not None}
)
_no_suspect = SUSPECT.isdisjoint  # for long lists: quicker than a Python loop
_CONTAINERS: Final = frozenset({list, dict})

_local = threading.local()


def qualified(cls: type) -> str:
    """``'module.QualName'`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _refusal(obj: object) -> TypeError:
    cls = type(obj)
    return TypeError(
        f"cannot serialize {cls.__module__}.{cls.__qualname__} objects with the native "
        "codec: register the type with distproc.wire.native.register_type(), or use the "
        "'pickle' serializer on a trusted network"
    )


def new_packer() -> Any:
    """A packer that tags what msgpack does not know (:func:`default`)."""
    return msgpack.Packer(
        default=default,
        strict_types=True,
        use_bin_type=True,
        autoreset=True,
        buf_size=_BUF_SIZE,
    )


def dumps(obj: Any) -> bytes:
    """Encode ``obj``; :class:`TypeError` names any value that cannot travel.

    Each thread packs with a packer of its own, kept for the next message
    unless this one made its buffer grow past :data:`KEEP_PACKER_UNDER`.
    While it packs, the packer is not in the thread's slot: a ``dumps`` that
    runs meanwhile on this thread (a finalizer that a garbage collection runs,
    such as a proxy's decref, or a registered type's encoder) packs with a new
    one instead of writing into this message.
    """
    if type(obj) in SUSPECT:
        obj = scrub(obj, 0)
    local = _local
    packer = getattr(local, "packer", None)
    local.packer = None
    if packer is None:
        packer = new_packer()
    data: bytes = packer.pack(obj)
    if len(data) <= KEEP_PACKER_UNDER:
        local.packer = packer  # else let its grown buffer go
    return data


def user_encoder(tag: Any, encode: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    """The entry of :data:`ENCODERS` for a type registered with ``encode``."""

    def encoder(obj: Any) -> list[Any]:
        value = encode(obj)
        if type(value) in SUSPECT:
            value = scrub(value, 0)
        return [tag, value]

    return encoder


# ---------------------------------------------------------------------------
# Looking into values.


def _plain(items: Iterable[Any]) -> bool:
    """Whether msgpack may pack ``items`` as they are (quicker than ``_no_suspect`` for few)."""
    for x in items:  # noqa: SIM110 (a loop is quicker than all() over a generator)
        if type(x) in SUSPECT and (x or type(x) not in _CONTAINERS):
            return False  # a non-empty list or dict to look into, or a type to handle
    return True


def _scrub_items(items: Iterable[Any], depth: int) -> list[Any]:
    if depth > MAX_DEPTH:
        raise ValueError("nesting too deep for the native codec")
    depth += 1
    return [x if type(x) not in SUSPECT else scrub(x, depth) for x in items]


def scrub(obj: Any, depth: int) -> Any:
    """What to hand to msgpack instead of ``obj`` (a :data:`SUSPECT` type)."""
    cls = type(obj)
    if cls is list:
        return obj if _no_suspect(map(type, obj)) else _scrub_items(obj, depth)
    if cls is dict:
        # Keys are not looked at: the hashable suspects (ExtType, Timestamp, a
        # read-only memoryview) make odd keys, and checking them would cost
        # every dict.
        if _no_suspect(map(type, obj.values())):
            return obj
        if depth > MAX_DEPTH:
            raise ValueError("nesting too deep for the native codec")
        return {k: v if type(v) not in SUSPECT else scrub(v, depth + 1) for k, v in obj.items()}
    if cls is bytearray:
        return [_BYTEARRAY_TAG, bytes(obj)]
    raise _refusal(obj)


def default(obj: Any) -> list[Any]:
    """msgpack's ``default``: every value that msgpack does not pack itself."""
    if type(obj) is tuple:
        for x in obj:  # _plain(obj), inlined: the hottest loop of dumps
            if type(x) in SUSPECT and (x or type(x) not in _CONTAINERS):
                return [_TUPLE_TAG, *_scrub_items(obj, 0)]
        return [_TUPLE_TAG, *obj]
    encoder = ENCODERS.get(type(obj))
    if encoder is not None:
        return encoder(obj)
    if isinstance(obj, BaseException):
        return _encode_exception(obj)
    raise _refusal(obj)


# ---------------------------------------------------------------------------
# Exceptions.

#: Argument types that can always be packed.
_SIMPLE_ARGS: Final = frozenset({str, int, float, bool, bytes, type(None)})


def _encode_exception(exc: BaseException) -> list[Any]:
    cls = type(exc)
    name = EXC_NAMES.get(cls) or qualified(cls)
    try:
        message = str(exc)
        if type(message) is not str:
            raise TypeError
    except Exception:
        message = f"<unprintable {name} object>"
    args: Sequence[Any] = exc.args
    if isinstance(exc, OSError) and exc.filename is not None:
        args = _oserror_args(exc)  # exc.args leaves out the file names
    if not _SIMPLE_ARGS.issuperset(map(type, args)):
        try:  # a trial run on a private packer: args that cannot travel become the message
            if not _plain(args):
                args = _scrub_items(args, 0)
            new_packer().pack(args)
        except (TypeError, ValueError, OverflowError):
            args = (message,)
    return [_EXCEPTION_TAG, name, message, *args]


def _oserror_args(exc: OSError) -> Sequence[Any]:
    try:
        reduced = type(exc).__reduce__(exc)
        if type(reduced[1]) is tuple:
            return reduced[1]
    except Exception:
        pass
    return exc.args


# ---------------------------------------------------------------------------
# The built-in types (registered by .registry).


def encode_set(obj: set[Any] | frozenset[Any]) -> list[Any]:
    tag = _SET_TAG if type(obj) is set else _FROZENSET_TAG
    return [tag, *obj] if _plain(obj) else [tag, *_scrub_items(obj, 0)]


def encode_int(n: int) -> list[Any]:
    return [_BIGINT_TAG, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)]


_MICROSECOND: Final = _dt.timedelta(microseconds=1)


def _tz_fields(tz: _dt.tzinfo) -> list[Any]:
    if type(tz) is not _dt.timezone:
        raise TypeError(
            f"cannot serialize a datetime or time with tzinfo {qualified(type(tz))} with the "
            "native codec: only fixed offsets (datetime.timezone) are supported"
        )
    offset = tz.utcoffset(None)
    name: str | None = tz.tzname(None)
    if name == _dt.timezone(offset).tzname(None):
        name = None
    return [offset // _MICROSECOND, name]


def encode_datetime(d: _dt.datetime) -> list[Any]:
    fields = [
        _DATETIME_TAG,
        d.year,
        d.month,
        d.day,
        d.hour,
        d.minute,
        d.second,
        d.microsecond,
        d.fold,
    ]
    if d.tzinfo is not None:
        fields += _tz_fields(d.tzinfo)
    return fields


def encode_time(t: _dt.time) -> list[Any]:
    fields = [_TIME_TAG, t.hour, t.minute, t.second, t.microsecond, t.fold]
    if t.tzinfo is not None:
        fields += _tz_fields(t.tzinfo)
    return fields


def encode_date(d: _dt.date) -> list[Any]:
    return [_DATE_TAG, d.year, d.month, d.day]


def encode_timedelta(d: _dt.timedelta) -> list[Any]:
    return [_TIMEDELTA_TAG, d.days, d.seconds, d.microseconds]


def encode_decimal(d: decimal.Decimal) -> list[Any]:
    return [_DECIMAL_TAG, str(d)]


def encode_uuid(u: uuid.UUID) -> list[Any]:
    return [_UUID_TAG, u.bytes]


def encode_complex(c: complex) -> list[Any]:
    return [_COMPLEX_TAG, c.real, c.imag]


def encode_token(token: Token) -> Any:
    """A :class:`Token`'s value for :func:`user_encoder` (it is registered as a user type)."""
    return [token.typeid, token.address, token.id]
