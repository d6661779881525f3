"""The ``'native'`` codec: msgpack with tagged arrays, and no code ever runs on ``loads``.

msgpack's own types (``None``, ``bool``, ``int`` within 64 bits, ``float``,
``str``, ``bytes``, ``list``, ``dict``) are written as themselves, by msgpack's
C code.  Every other supported value is written as a *tagged array*: a msgpack
array whose first element is an ext value with an empty payload, the ext code
naming the type, followed by the fields below (each one packed recursively, so
tagged values nest).  A tagged array may be a map key (tuples, frozensets).

=======  ======================  ===================================================
code     type                    fields after the tag
=======  ======================  ===================================================
0-99     user types              one value: ``encode(obj)`` of :func:`register_type`
100      ``tuple``               the items
101      ``set``                 the items
102      ``frozenset``           the items
103      ``bytearray``           the content, as bin
104      ``int`` beyond 64 bits  big-endian two's complement, as bin
105      ``datetime``            year, month, day, hour, minute, second,
                                 microsecond, fold; if aware, then the UTC offset
                                 in microseconds and the zone's name (nil unless
                                 the ``timezone`` was given one)
106      ``date``                year, month, day
107      ``time``                hour, minute, second, microsecond, fold
                                 [, offset, name]
108      ``timedelta``           days, seconds, microseconds
109      ``Decimal``             ``str(value)``
110      ``UUID``                the 16 bytes, as bin
111      ``complex``             real, imag (floats)
112      exception               ``'module.QualName'``, ``str(exc)``, then the
                                 args (an ``OSError``'s with its file names)
113      :class:`Token`          one value: ``[typeid, address, id]``
114-127  (free)                  reserved for distproc's other layers
=======  ======================  ===================================================

Codes 0-99 are for applications (:func:`register_type`); 100-127 belong to
distproc (``register_type(..., reserved=True)``).  Types are matched exactly:
subclasses of supported types (``IntEnum``, ``OrderedDict``, a ``str``
subclass...) are refused unless registered themselves.  Aware datetimes and
times must use a fixed offset (a :class:`datetime.timezone`).  ``memoryview``
and msgpack's own ``ExtType``/``Timestamp`` objects are refused too (dict keys
are not inspected for them).  An exception travels as its type's name, its
message and its args, without ``__cause__``, traceback or other attributes;
args that cannot travel are replaced by the message.

Security: :meth:`NativeCodec.loads` never unpickles, never imports a module and
never evaluates anything.  It builds only the types above; an exception is
instantiated only when its type is a builtin exception class or one registered
with :func:`register_exception` (``queue.Empty``, ``queue.Full`` and distproc's
own errors are), and any other exception arrives as a
:class:`~distproc.errors.RemoteError` carrying ``"module.Type: message"``, its
type never looked up.  A registered ``decode`` function receives already
decoded plain values.  Malformed input raises
:class:`~distproc.errors.ProtocolError`.  msgpack's timestamp extension (code
-1), which this codec never writes, is read as an aware UTC ``datetime``.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import decimal
import queue
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeVar

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type stubs

from .. import errors as _errors
from ..errors import ProtocolError, RemoteError
from .codecs import BytesLike, Codec
from .messages import Token

__all__ = [
    "RESERVED_CODES",
    "USER_CODES",
    "NativeCodec",
    "register_exception",
    "register_type",
    "unregister_exception",
    "unregister_type",
]

_T = TypeVar("_T")

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
_unpackb = msgpack.unpackb
_getrefcount = sys.getrefcount

#: Deepest list/dict nesting that dumps inspects (msgpack's own limit is lower).
_MAX_DEPTH: Final = 1000
#: A thread's packer keeps its largest buffer; drop it after a message this big.
_KEEP_PACKER_UNDER: Final = 1 << 20
_BUF_SIZE: Final = 16 * 1024

# ---------------------------------------------------------------------------
# Registry (module-level: every NativeCodec sees every registration).

_lock = threading.Lock()
#: exact type -> function returning the tagged array for a value of that type.
_ENCODERS: dict[type, Callable[[Any], list[Any]]] = {}
#: ext code -> function building the value from its tagged array (tag included).
_DECODERS: dict[int, Callable[[list[Any]], Any]] = {}
#: types registered with register_type -> their code (for unregister_type).
_USER_TYPES: dict[type, int] = {}

#: Types that msgpack packs natively but that must not reach it unseen: lists and
#: dicts may hold one of the others, a bytearray would come back as bytes, and the
#: rest are not supported (msgpack would write them as bin or as raw ext values).
_SUSPECT: Final[frozenset[type]] = frozenset(
    {list, dict, bytearray, memoryview, msgpack.ExtType, msgpack.Timestamp}
    # msgpack.ext.Bypass (newer msgpack) writes its bytes as they are.
    | {cls for cls in [getattr(msgpack.ext, "Bypass", None)] if cls is not None}
)
_no_suspect = _SUSPECT.isdisjoint  # for long lists: quicker than a Python loop
_CONTAINERS: Final = frozenset({list, dict})
#: Types that a registration may not claim: msgpack packs most of them itself.
_UNREGISTRABLE: Final[frozenset[type]] = frozenset(
    {type(None), bool, int, float, str, bytes, tuple, *_SUSPECT}
)


def _refusal(obj: object) -> TypeError:
    cls = type(obj)
    return TypeError(
        f"cannot serialize {cls.__module__}.{cls.__qualname__} objects with the native "
        "codec: register the type with distproc.wire.native.register_type(), or use the "
        "'pickle' serializer on a trusted network"
    )


def _register(
    cls: type,
    code: int,
    encoder: Callable[[Any], list[Any]],
    decoder: Callable[[list[Any]], Any],
) -> None:
    """Install a codec entry.  The caller holds ``_lock``."""
    if code in _DECODERS:
        raise ValueError(f"ext code {code} is already registered")
    if cls in _ENCODERS or cls in _UNREGISTRABLE:
        raise ValueError(f"{_qualified(cls)} is already encodable")
    _DECODERS[code] = decoder
    _ENCODERS[cls] = encoder


def register_type(
    cls: type[_T],
    code: int,
    encode: Callable[[_T], Any],
    decode: Callable[[Any], _T],
    *,
    reserved: bool = False,
) -> None:
    """Send instances of exactly ``cls`` as ext ``code``.

    ``encode(obj)`` returns any value this codec can pack (it is packed
    recursively, so it may hold tuples, datetimes, other registered types...);
    ``decode(value)`` receives that value, decoded, and returns the object.
    ``decode`` runs on data from the peer: validate what it receives.

    Applications use codes 0-99 (:data:`USER_CODES`); 100-127 belong to
    distproc and need ``reserved=True``.  Registering a code or a type twice
    raises :class:`ValueError`.  Registrations are global and apply to every
    :class:`NativeCodec`, including ones created earlier.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_type() needs a class, not {cls!r}")
    if type(code) is not int or code not in (RESERVED_CODES if reserved else USER_CODES):
        allowed = RESERVED_CODES if reserved else USER_CODES
        raise ValueError(
            f"ext code {code!r} is out of range: expected {allowed.start}-{allowed.stop - 1}"
        )

    tag = _ExtType(code, b"")
    with _lock:
        _register(cls, code, _user_encoder(tag, encode), _user_decoder(decode))
        _USER_TYPES[cls] = code


def unregister_type(cls: type) -> None:
    """Undo :func:`register_type` for ``cls`` (:class:`KeyError` if it was not)."""
    with _lock:
        code = _USER_TYPES.pop(cls)
        del _ENCODERS[cls], _DECODERS[code]


def _isolated(fn: Callable[[_T], Any], arg: _T) -> Any:
    """Run user code while packing: a ``dumps`` it makes gets its own packer."""
    tls = _tls
    saved = getattr(tls, "packer", None)
    tls.packer = None
    try:
        return fn(arg)
    finally:
        tls.packer = saved


def _user_encoder(tag: Any, encode: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    def encoder(obj: Any) -> list[Any]:
        value = _isolated(encode, obj)
        if type(value) in _SUSPECT:
            value = _scrub(value, 0)
        return [tag, value]

    return encoder


def _user_decoder(decode: Callable[[Any], Any]) -> Callable[[list[Any]], Any]:
    def decoder(items: list[Any]) -> Any:
        _expect(items, 2)
        value = items[1]
        _refuse_tags(value)
        return decode(value)

    return decoder


# ---------------------------------------------------------------------------
# Exceptions.

#: Exception classes that loads may instantiate, by the name they travel under.
_EXC_BY_NAME: dict[str, type[BaseException]] = {
    f"builtins.{name}": obj
    for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, BaseException)
}
_BUILTIN_EXCEPTIONS: Final = frozenset(_EXC_BY_NAME.values())
#: Registered (non-builtin) exception classes -> the name they travel under.
_EXC_NAMES: dict[type[BaseException], str] = {}


def register_exception(cls: type[BaseException], name: str | None = None) -> None:
    """Let ``loads`` rebuild exceptions of type ``cls`` as ``cls(*args)``.

    ``name`` is what the type travels as (default ``'module.QualName'``); both
    peers must register the class under the same name.  Builtin exception
    types need no registration.  A duplicate class or name raises
    :class:`ValueError`.
    """
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise TypeError(f"register_exception() needs an exception class, not {cls!r}")
    name = name or _qualified(cls)
    with _lock:
        if cls in _BUILTIN_EXCEPTIONS or cls in _EXC_NAMES:
            raise ValueError(f"exception class {_qualified(cls)} is already registered")
        if name in _EXC_BY_NAME:
            raise ValueError(f"exception name {name!r} is already registered")
        _EXC_BY_NAME[name] = cls
        _EXC_NAMES[cls] = name


def unregister_exception(cls: type[BaseException]) -> None:
    """Undo :func:`register_exception` (:class:`KeyError` if it was not)."""
    with _lock:
        name = _EXC_NAMES.pop(cls)
        del _EXC_BY_NAME[name]


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


#: Argument types that can always be packed.
_SIMPLE_ARGS: Final = frozenset({str, int, float, bool, bytes, type(None)})


def _encode_exception(exc: BaseException) -> list[Any]:
    cls = type(exc)
    name = _EXC_NAMES.get(cls) or _qualified(cls)
    try:
        message = _isolated(str, exc)
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
            _new_packer().pack(args)
        except (TypeError, ValueError, OverflowError):
            args = (message,)
    return [_EXCEPTION_TAG, name, message, *args]


def _oserror_args(exc: OSError) -> Sequence[Any]:
    try:
        reduced = _isolated(type(exc).__reduce__, exc)
        if type(reduced[1]) is tuple:
            return reduced[1]
    except Exception:
        pass
    return exc.args


def _decode_exception(items: list[Any]) -> BaseException:
    if len(items) < 3:
        raise ValueError("malformed exception: missing its name or message")
    name, message = items[1], items[2]
    if type(name) is not str or type(message) is not str:
        raise ValueError("malformed exception: name and message must be str")
    args = items[3:]
    cls = _EXC_BY_NAME.get(name)
    if cls is not None:
        _refuse_tags(args)
        try:
            return cls(*args)
        except Exception:
            pass  # its constructor wants other arguments: report it as remote
    return RemoteError(f"{name}: {message}" if message else name)


# ---------------------------------------------------------------------------
# Encoding.


def _plain(items: Iterable[Any]) -> bool:
    """Whether msgpack may pack ``items`` as they are (quicker than ``_no_suspect`` for few)."""
    for x in items:  # noqa: SIM110 (a loop is quicker than all() over a generator)
        if type(x) in _SUSPECT and (x or type(x) not in _CONTAINERS):
            return False  # a non-empty list or dict to look into, or a type to handle
    return True


def _scrub_items(items: Iterable[Any], depth: int) -> list[Any]:
    if depth > _MAX_DEPTH:
        raise ValueError("nesting too deep for the native codec")
    depth += 1
    return [x if type(x) not in _SUSPECT else _scrub(x, depth) for x in items]


def _scrub(obj: Any, depth: int) -> Any:
    """What to hand to msgpack instead of ``obj`` (a :data:`_SUSPECT` type)."""
    cls = type(obj)
    if cls is list:
        return obj if _no_suspect(map(type, obj)) else _scrub_items(obj, depth)
    if cls is dict:
        # Keys are not looked at: the hashable suspects (ExtType, Timestamp, a
        # read-only memoryview) make odd keys, and checking them would cost
        # every dict.
        if _no_suspect(map(type, obj.values())):
            return obj
        if depth > _MAX_DEPTH:
            raise ValueError("nesting too deep for the native codec")
        return {k: v if type(v) not in _SUSPECT else _scrub(v, depth + 1) for k, v in obj.items()}
    if cls is bytearray:
        return [_BYTEARRAY_TAG, bytes(obj)]
    raise _refusal(obj)


def _default(obj: Any) -> list[Any]:
    """msgpack's ``default``: every value that msgpack does not pack itself."""
    if type(obj) is tuple:
        for x in obj:  # _plain(obj), inlined: the hottest loop of dumps
            if type(x) in _SUSPECT and (x or type(x) not in _CONTAINERS):
                return [_TUPLE_TAG, *_scrub_items(obj, 0)]
        return [_TUPLE_TAG, *obj]
    encoder = _ENCODERS.get(type(obj))
    if encoder is not None:
        return encoder(obj)
    if isinstance(obj, BaseException):
        return _encode_exception(obj)
    raise _refusal(obj)


def _encode_set(obj: set[Any] | frozenset[Any]) -> list[Any]:
    tag = _SET_TAG if type(obj) is set else _FROZENSET_TAG
    return [tag, *obj] if _plain(obj) else [tag, *_scrub_items(obj, 0)]


def _encode_int(n: int) -> list[Any]:
    return [_BIGINT_TAG, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)]


def _tz_fields(tz: _dt.tzinfo) -> list[Any]:
    if type(tz) is not _dt.timezone:
        raise TypeError(
            f"cannot serialize a datetime or time with tzinfo {_qualified(type(tz))} with the "
            "native codec: only fixed offsets (datetime.timezone) are supported"
        )
    offset = tz.utcoffset(None)
    name: str | None = tz.tzname(None)
    if name == _dt.timezone(offset).tzname(None):
        name = None
    return [offset // _MICROSECOND, name]


_MICROSECOND: Final = _dt.timedelta(microseconds=1)


def _encode_datetime(d: _dt.datetime) -> list[Any]:
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


def _encode_time(t: _dt.time) -> list[Any]:
    fields = [_TIME_TAG, t.hour, t.minute, t.second, t.microsecond, t.fold]
    if t.tzinfo is not None:
        fields += _tz_fields(t.tzinfo)
    return fields


def _encode_token(token: Token) -> list[Any]:
    return [token.typeid, token.address, token.id]


# ---------------------------------------------------------------------------
# Decoding.


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


def _decode_set(items: list[Any]) -> set[Any]:
    del items[0]
    return set(items)


def _decode_frozenset(items: list[Any]) -> frozenset[Any]:
    del items[0]
    return frozenset(items)


def _bin_field(items: list[Any]) -> bytes:
    _expect(items, 2)
    value = items[1]
    if type(value) is not bytes:
        raise ValueError("malformed ext value: expected bin")
    return value


def _decode_bytearray(items: list[Any]) -> bytearray:
    return bytearray(_bin_field(items))


def _decode_int(items: list[Any]) -> int:
    return int.from_bytes(_bin_field(items), "big", signed=True)


def _decode_datetime(items: list[Any]) -> _dt.datetime:
    if len(items) == 11:
        tz: _dt.timezone | None = _decode_tz(items[9], items[10])
    else:
        _expect(items, 9)
        tz = None
    _ints(items[1:9])
    _, year, month, day, hour, minute, second, microsecond, fold = items[:9]
    return _dt.datetime(year, month, day, hour, minute, second, microsecond, tz, fold=fold)


def _decode_date(items: list[Any]) -> _dt.date:
    _expect(items, 4)
    _ints(items[1:])
    return _dt.date(items[1], items[2], items[3])


def _decode_time(items: list[Any]) -> _dt.time:
    if len(items) == 8:
        tz: _dt.timezone | None = _decode_tz(items[6], items[7])
    else:
        _expect(items, 6)
        tz = None
    _ints(items[1:6])
    _, hour, minute, second, microsecond, fold = items[:6]
    return _dt.time(hour, minute, second, microsecond, tz, fold=fold)


def _decode_timedelta(items: list[Any]) -> _dt.timedelta:
    _expect(items, 4)
    _ints(items[1:])
    return _dt.timedelta(items[1], items[2], items[3])


def _decode_decimal(items: list[Any]) -> decimal.Decimal:
    _expect(items, 2)
    if type(items[1]) is not str:
        raise ValueError("malformed Decimal")
    return decimal.Decimal(items[1])


def _decode_uuid(items: list[Any]) -> uuid.UUID:
    return uuid.UUID(bytes=_bin_field(items))


def _decode_complex(items: list[Any]) -> complex:
    _expect(items, 3)
    if type(items[1]) is not float or type(items[2]) is not float:
        raise ValueError("malformed complex")
    return complex(items[1], items[2])


def _decode_token(value: Any) -> Token:
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


class _Tag(tuple[Any, object]):
    """What an ext value decodes to: (array decoder, ``_LIVE``).

    The array that it heads replaces it on the spot.  A tag anywhere else is
    malformed input; it would keep a reference to ``_LIVE`` (or to the shared
    tuple tag) alive, which ``loads`` notices in the reference counts and then
    looks for.
    """

    __slots__ = ()


_LIVE: Final = object()
_TUPLE_DECODED: Final = _Tag((None, _LIVE))


def _ext_hook(code: int, data: bytes) -> _Tag:
    if code == TUPLE and not data:
        return _TUPLE_DECODED
    decoder = _DECODERS.get(code)
    if decoder is None:
        raise ValueError(f"unknown ext code {code}")
    if data:
        raise ValueError(f"ext code {code} with a payload")
    return _Tag((decoder, _LIVE))


def _list_hook(items: list[Any]) -> Any:
    if items:
        head = items[0]
        if head is _TUPLE_DECODED:
            del items[0]
            return tuple(items)
        if type(head) is _Tag:
            return head[0](items)
    return items


def _has_tag(obj: Any, depth: int = 0) -> bool:
    """Whether a tag hides in ``obj``, looking through containers and exception args."""
    cls = type(obj)
    if cls is _Tag:
        return True
    if depth > _MAX_DEPTH:
        return False
    if cls is dict:
        return _has_tag(list(obj), depth + 1) or _has_tag(list(obj.values()), depth + 1)
    if cls in (list, tuple, set, frozenset):
        return any(_has_tag(x, depth + 1) for x in obj if type(x) in _WALK)
    if isinstance(obj, BaseException):
        return _has_tag(obj.args, depth + 1)
    return False


_WALK: Final = frozenset({_Tag, list, tuple, set, frozenset, dict})


def _refuse_tags(value: Any) -> None:
    if type(value) in _WALK and _has_tag(value):
        raise ValueError("ext tag outside the head of an array")


#: The fewest references to the tags that loads has seen after a decode: with no
#: tag left over (and no other thread decoding), the count it finds again.
_tag_baseline = sys.maxsize


def _check_tags(obj: Any, refs: int) -> None:
    """Called when the tag references differ from the baseline after a decode."""
    global _tag_baseline
    if _has_tag(obj):
        raise ProtocolError("malformed native payload: ext tag outside the head of an array")
    # Either another thread is decoding right now (the count is higher), or
    # this is the first look (the count is lower).
    if refs < _tag_baseline:
        _tag_baseline = refs


# ---------------------------------------------------------------------------
# The codec.

_tls = threading.local()


def _new_packer() -> Any:
    return msgpack.Packer(
        default=_default,
        strict_types=True,
        use_bin_type=True,
        autoreset=True,
        buf_size=_BUF_SIZE,
    )


class NativeCodec(Codec):
    """msgpack-based codec that never unpickles (see the module docstring).

    Thread-safe: each thread packs with its own cached ``msgpack.Packer``,
    shared by all instances (they are configured identically).
    """

    name = "native"

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj``; :class:`TypeError` names any value that cannot travel."""
        if type(obj) in _SUSPECT:
            obj = _scrub(obj, 0)
        tls = _tls
        packer = getattr(tls, "packer", None)
        if packer is None:
            packer = tls.packer = _new_packer()
        data: bytes = packer.pack(obj)
        if len(data) > _KEEP_PACKER_UNDER:
            tls.packer = None  # let its grown buffer go
        return data

    def loads(self, data: BytesLike) -> Any:
        """Decode ``data``; :class:`~distproc.errors.ProtocolError` if it is malformed."""
        try:
            obj = _unpackb(
                data,
                ext_hook=_ext_hook,
                list_hook=_list_hook,
                raw=False,
                strict_map_key=False,
                timestamp=3,
            )
        except Exception as exc:
            # Drop the traceback: its frames would keep decoded tags alive.
            raise ProtocolError(
                f"malformed native payload: {type(exc).__name__}: {exc}"
            ) from exc.with_traceback(None)
        # A tag left in the result keeps a reference to _LIVE or to _TUPLE_DECODED.
        refs = _getrefcount(_TUPLE_DECODED) + _getrefcount(_LIVE)
        if refs != _tag_baseline:
            _check_tags(obj, refs)
        return obj


# ---------------------------------------------------------------------------
# Built-in registrations.


def _decode_tuple(items: list[Any]) -> tuple[Any, ...]:
    # Never called (_ext_hook and _list_hook handle tuples themselves): the entry
    # reserves the code.
    del items[0]
    return tuple(items)


def _encode_date(d: _dt.date) -> list[Any]:
    return [_DATE_TAG, d.year, d.month, d.day]


def _encode_timedelta(d: _dt.timedelta) -> list[Any]:
    return [_TIMEDELTA_TAG, d.days, d.seconds, d.microseconds]


def _encode_decimal(d: decimal.Decimal) -> list[Any]:
    return [_DECIMAL_TAG, str(d)]


def _encode_uuid(u: uuid.UUID) -> list[Any]:
    return [_UUID_TAG, u.bytes]


def _encode_complex(c: complex) -> list[Any]:
    return [_COMPLEX_TAG, c.real, c.imag]


with _lock:
    # _default handles tuples and exceptions itself, _scrub bytearrays.
    _DECODERS[TUPLE] = _decode_tuple
    _DECODERS[BIGINT] = _decode_int
    _DECODERS[EXCEPTION] = _decode_exception
    _DECODERS[BYTEARRAY] = _decode_bytearray
    _ENCODERS[int] = _encode_int  # msgpack's default only gets the ints it cannot pack
    _register(set, SET, _encode_set, _decode_set)
    _register(frozenset, FROZENSET, _encode_set, _decode_frozenset)
    _register(_dt.datetime, DATETIME, _encode_datetime, _decode_datetime)
    _register(_dt.date, DATE, _encode_date, _decode_date)
    _register(_dt.time, TIME, _encode_time, _decode_time)
    _register(_dt.timedelta, TIMEDELTA, _encode_timedelta, _decode_timedelta)
    _register(decimal.Decimal, DECIMAL, _encode_decimal, _decode_decimal)
    _register(uuid.UUID, UUID, _encode_uuid, _decode_uuid)
    _register(complex, COMPLEX, _encode_complex, _decode_complex)

register_type(Token, TOKEN, _encode_token, _decode_token, reserved=True)

register_exception(queue.Empty, "queue.Empty")
register_exception(queue.Full, "queue.Full")
for _name in _errors.__all__:
    _cls = getattr(_errors, _name)
    if isinstance(_cls, type) and issubclass(_cls, BaseException):
        register_exception(_cls)
del _name, _cls

NativeCodec().loads(NativeCodec().dumps(((), {frozenset()})))  # sets _tag_baseline
