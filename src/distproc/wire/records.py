"""The native protocol's records: what a frame carries between two distproc peers.

Frames keep the stdlib's length prefix and limits (:mod:`.framing`).  A native
frame's payload is one or more *records* (a batch), each a fixed header and a
blob:

======  ======  ===============================================================
field   format  meaning
======  ======  ===============================================================
op      ``B``   ``CALL`` 0, ``REPLY`` 1, ``CANCEL`` 2, ``DEFERRED`` 3, ``HELLO`` 4
id      ``Q``   ``CALL``/``REPLY``/``CANCEL``: the request id; ``DEFERRED``: the
                client thread whose ``noreply`` call failed
id2     ``Q``   ``CALL``: the calling thread (for per-thread objects such as
                ``RLock``); else 0
aux     ``B``   ``CALL``: flags (bit 0: ``noreply``); ``REPLY``/``DEFERRED``: the
                reply kind (index into :data:`KINDS`)
length  ``I``   size of the blob
blob    bytes   ``CALL``: the codec's encoding of ``(ident, method, args, kwds)``;
                ``REPLY``/``DEFERRED``: the encoding of the value; ``HELLO``
                (the client's first record): its process's session id; else empty
======  ======  ===============================================================

A batch is at most :data:`BATCH_LIMIT` bytes; a larger record goes in a frame
of its own.  So no frame is larger than the largest single call or reply, and
a peer's frame limit refuses no batch whose records it accepts one by one.

Values are encoded one by one, so a value that one side cannot decode fails
only its own call, never the frame or the connection, and the header is read
without decoding anything.  The version of this format is
:data:`distproc.wire.handshake.NATIVE_VERSION`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from ..errors import ProtocolError
from .codecs import BytesLike
from .messages import KIND_ERROR, KIND_PROXY, KIND_RETURN, KIND_TRACEBACK, KIND_UNSERIALIZABLE

__all__ = [
    "BATCH_LIMIT",
    "CALL",
    "CANCEL",
    "DEFERRED",
    "FRAMED_RECORD",
    "HELLO",
    "KINDS",
    "KIND_CODES",
    "NOREPLY",
    "RECORD",
    "REPLY",
    "call_fields",
    "iter_records",
    "only_record",
    "record",
    "record_parts",
]

RECORD = struct.Struct("!BQQBI")
#: A frame's length prefix and its one record's header, packed at once: a frame
#: that carries a single small record (most calls and replies) needs one pack.
FRAMED_RECORD = struct.Struct("!iBQQBI")
CALL, REPLY, CANCEL, DEFERRED, HELLO = 0, 1, 2, 3, 4
#: The most bytes of records in a frame of several (a larger record goes alone).
BATCH_LIMIT = 64 * 1024
NOREPLY = 0x01
KINDS = (KIND_RETURN, KIND_ERROR, KIND_TRACEBACK, KIND_UNSERIALIZABLE, KIND_PROXY)
KIND_CODES = {kind: code for code, kind in enumerate(KINDS)}

Record = tuple[int, int, int, int, memoryview]


def record(op: int, id: int, id2: int = 0, aux: int = 0, blob: bytes = b"") -> list[bytes]:
    """One record, as the parts to write (header, blob)."""
    return [RECORD.pack(op, id, id2, aux, len(blob)), blob]


def record_parts(op: int, id: int, id2: int, aux: int, parts: list[BytesLike]) -> list[BytesLike]:
    """One record whose blob is ``parts`` (a codec's ``dumps_parts``), as the parts to write."""
    return [RECORD.pack(op, id, id2, aux, sum(len(part) for part in parts)), *parts]


def iter_records(frame: bytes | bytearray | memoryview) -> Iterator[Record]:
    """The records of one frame: ``(op, id, id2, aux, blob)``."""
    view = memoryview(frame)
    pos, end, size = 0, len(view), RECORD.size
    while pos < end:
        if end - pos < size:
            raise ProtocolError("truncated record header")
        op, id1, id2, aux, length = RECORD.unpack_from(view, pos)
        pos += size
        if length > end - pos:
            raise ProtocolError("record longer than its frame")
        yield op, id1, id2, aux, view[pos : pos + length]
        pos += length


def only_record(frame: bytes | bytearray | memoryview) -> Record | None:
    """The frame's record if it carries exactly one (the usual case), else ``None``:
    the header read without :func:`iter_records`'s generator."""
    size = RECORD.size
    if len(frame) < size:
        return None
    op, id1, id2, aux, length = RECORD.unpack_from(frame)
    if length != len(frame) - size:
        return None
    return op, id1, id2, aux, memoryview(frame)[size:]


def call_fields(request: Any) -> tuple[str | None, str, tuple[Any, ...], dict[str, Any]]:
    """A decoded ``CALL`` blob's ``(ident, method, args, kwds)``, each checked for its
    type (an object id that is a list would fail later, outside any handler):
    :class:`~distproc.errors.ProtocolError` saying which field is wrong."""
    if type(request) not in (tuple, list) or len(request) != 4:
        raise ProtocolError("a call must be (object id, method, args, kwds)")
    ident, method, args, kwds = request
    if type(args) is not tuple:
        if type(args) is not list:
            raise ProtocolError(f"the arguments must be a tuple, not {type(args).__name__}")
        args = tuple(args)
    if type(kwds) is not dict:
        raise ProtocolError(f"the keywords must be a dict, not {type(kwds).__name__}")
    if type(method) is not str:
        raise ProtocolError(f"the method name must be a str, not {type(method).__name__}")
    if ident is not None and type(ident) is not str:
        raise ProtocolError(f"the object id must be a str or None, not {type(ident).__name__}")
    return ident, method, args, kwds
