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

The package: :mod:`.tags` (the ext codes, and the check that no tag is left
in a decoded value, on which the security argument above rests),
:mod:`.encode`, :mod:`.decode`, :mod:`.registry` (the public registration
functions, and distproc's own registrations) and :mod:`.codec`
(:class:`NativeCodec`).
"""

from .codec import NativeCodec
from .registry import register_exception, register_type, unregister_exception, unregister_type
from .tags import RESERVED_CODES, USER_CODES

__all__ = [
    "RESERVED_CODES",
    "USER_CODES",
    "NativeCodec",
    "register_exception",
    "register_type",
    "unregister_exception",
    "unregister_type",
]
