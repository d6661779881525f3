"""The type registry: which types the native codec sends, under which ext codes.

Registrations are global: every :class:`~.codec.NativeCodec` sees every one,
including codecs made earlier.  Applications register their own types with
:func:`register_type` (codes 0-99, :data:`~.tags.USER_CODES`) and the
exceptions that may be rebuilt on their side with :func:`register_exception`;
distproc's own (codes 100-127) are registered here, at import, the same way.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any, Final, TypeVar

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type stubs

from ... import errors as _errors
from ..messages import Token
from . import decode as _decode, encode as _encode
from .decode import BUILTIN_EXCEPTIONS, DECODERS, EXC_BY_NAME
from .encode import ENCODERS, EXC_NAMES, SUSPECT, qualified
from .tags import (
    BIGINT,
    BYTEARRAY,
    COMPLEX,
    DATE,
    DATETIME,
    DECIMAL,
    EXCEPTION,
    FROZENSET,
    RESERVED_CODES,
    SET,
    TIME,
    TIMEDELTA,
    TOKEN,
    TUPLE,
    USER_CODES,
    UUID,
)

__all__ = ["register_exception", "register_type", "unregister_exception", "unregister_type"]

_T = TypeVar("_T")

_lock = threading.Lock()
#: types registered with register_type -> their code (for unregister_type).
USER_TYPES: dict[type, int] = {}
#: Types that a registration may not claim: msgpack packs most of them itself.
_UNREGISTRABLE: Final[frozenset[type]] = frozenset(
    {type(None), bool, int, float, str, bytes, tuple, *SUSPECT}
)


def _register(
    cls: type,
    code: int,
    encoder: Callable[[Any], list[Any]],
    decoder: Callable[[list[Any]], Any],
) -> None:
    """Install a codec entry.  The caller holds ``_lock``."""
    if code in DECODERS:
        raise ValueError(f"ext code {code} is already registered")
    if cls in ENCODERS or cls in _UNREGISTRABLE:
        raise ValueError(f"{qualified(cls)} is already encodable")
    DECODERS[code] = decoder
    ENCODERS[cls] = encoder


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

    tag = msgpack.ExtType(code, b"")
    with _lock:
        _register(cls, code, _encode.user_encoder(tag, encode), _decode.user_decoder(decode))
        USER_TYPES[cls] = code


def unregister_type(cls: type) -> None:
    """Undo :func:`register_type` for ``cls`` (:class:`KeyError` if it was not)."""
    with _lock:
        code = USER_TYPES.pop(cls)
        del ENCODERS[cls], DECODERS[code]


def register_exception(cls: type[BaseException], name: str | None = None) -> None:
    """Let ``loads`` rebuild exceptions of type ``cls`` as ``cls(*args)``.

    ``name`` is what the type travels as (default ``'module.QualName'``); both
    peers must register the class under the same name.  Builtin exception
    types need no registration.  A duplicate class or name raises
    :class:`ValueError`.
    """
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise TypeError(f"register_exception() needs an exception class, not {cls!r}")
    name = name or qualified(cls)
    with _lock:
        if cls in BUILTIN_EXCEPTIONS or cls in EXC_NAMES:
            raise ValueError(f"exception class {qualified(cls)} is already registered")
        if name in EXC_BY_NAME:
            raise ValueError(f"exception name {name!r} is already registered")
        EXC_BY_NAME[name] = cls
        EXC_NAMES[cls] = name


def unregister_exception(cls: type[BaseException]) -> None:
    """Undo :func:`register_exception` (:class:`KeyError` if it was not)."""
    with _lock:
        name = EXC_NAMES.pop(cls)
        del EXC_BY_NAME[name]


# ---------------------------------------------------------------------------
# distproc's own registrations.

with _lock:
    # encode.default handles tuples and exceptions itself, encode.scrub bytearrays.
    DECODERS[TUPLE] = _decode.decode_tuple
    DECODERS[BIGINT] = _decode.decode_int
    DECODERS[EXCEPTION] = _decode.decode_exception
    DECODERS[BYTEARRAY] = _decode.decode_bytearray
    ENCODERS[int] = _encode.encode_int  # msgpack's default only gets the ints it cannot pack
    _register(set, SET, _encode.encode_set, _decode.decode_set)
    _register(frozenset, FROZENSET, _encode.encode_set, _decode.decode_frozenset)
    _register(_dt.datetime, DATETIME, _encode.encode_datetime, _decode.decode_datetime)
    _register(_dt.date, DATE, _encode.encode_date, _decode.decode_date)
    _register(_dt.time, TIME, _encode.encode_time, _decode.decode_time)
    _register(_dt.timedelta, TIMEDELTA, _encode.encode_timedelta, _decode.decode_timedelta)
    _register(decimal.Decimal, DECIMAL, _encode.encode_decimal, _decode.decode_decimal)
    _register(uuid.UUID, UUID, _encode.encode_uuid, _decode.decode_uuid)
    _register(complex, COMPLEX, _encode.encode_complex, _decode.decode_complex)

register_type(Token, TOKEN, _encode.encode_token, _decode.decode_token, reserved=True)

register_exception(queue.Empty, "queue.Empty")
register_exception(queue.Full, "queue.Full")
for _name in _errors.__all__:
    _cls = getattr(_errors, _name)
    if isinstance(_cls, type) and issubclass(_cls, BaseException):
        register_exception(_cls)
del _name, _cls
