"""The parsers a hostile peer reaches, each as one function of the bytes it sent.

Each target returns what the parser made of its input, or raises
:class:`~distproc.errors.ProtocolError` (or, for the handshake,
:class:`~distproc.errors.AuthenticationError`): anything else escaping is a
bug.  The property tests (``test_properties.py``) and the coverage-guided
runner (``atheris_main.py``) drive the same functions, so what one finds the
other checks.

- :func:`framing`: a byte stream through :class:`~distproc.wire.framing.FrameDecoder`
  and :class:`~distproc.wire.framing.FrameReader`, cut into reads where the input says.
- :func:`handshake`: frames fed to either side's :class:`~distproc.wire.handshake.Handshake`.
- :func:`records`: a native frame's records, and each ``CALL`` blob decoded
  and checked as the server does (:func:`~distproc.wire.records.call_fields`).
- :func:`codec`: :class:`~distproc.wire.native.NativeCodec` ``loads``.
"""

from __future__ import annotations

from typing import Any

from distproc.errors import AuthenticationError, ProtocolError
from distproc.server import ServerConfig
from distproc.wire.framing import HANDSHAKE_MAX_FRAME, FrameDecoder, FrameReader
from distproc.wire.handshake import FLAG_PICKLE, Handshake, make_marker
from distproc.wire.native import NativeCodec
from distproc.wire.records import CALL, call_fields, iter_records, only_record

__all__ = ["AUTHKEY", "EXPECTED", "MAX_FRAME", "codec", "framing", "handshake", "records"]

#: The errors a target may raise for bad input; anything else is a finding.
EXPECTED = (ProtocolError, AuthenticationError)
#: Frames are limited to this here, so that inputs of a few KiB reach the limit.
MAX_FRAME = 4096
AUTHKEY = b"fuzz-authkey"
#: The server's own bound on what one payload decodes to.
MAX_ITEMS = ServerConfig().max_decoded_items
_CODEC = NativeCodec(max_items=MAX_ITEMS)


def _cuts(data: bytes, cuts: bytes) -> list[bytes]:
    """``data`` in reads of the sizes that ``cuts`` gives (one byte each, 1-256)."""
    reads, pos = [], 0
    for size in cuts or b"\xff":
        if pos >= len(data):
            break
        reads.append(data[pos : pos + size + 1])
        pos += size + 1
    if pos < len(data):
        reads.append(data[pos:])
    return reads


def framing(data: bytes, cuts: bytes = b"", max_frame: int = MAX_FRAME) -> list[bytes]:
    """The frames of the stream ``data``, read in pieces; both readers must agree."""
    decoder = FrameDecoder(max_frame)
    reader = FrameReader(max_frame)
    decoded: list[bytes] = []
    read: list[bytes] = []
    for piece in _cuts(data, cuts):
        decoded += decoder.feed(piece)
        while piece:
            view = reader.get_buffer()
            n = min(len(view), len(piece))
            view[:n] = piece[:n]
            view.release()
            reader.buffer_updated(n)
            piece = piece[n:]
            try:
                read += [bytes(f) for f in reader.frames()]
            except ProtocolError as exc:  # the decoder, fed the same bytes first, did not
                raise AssertionError(f"FrameReader alone refused the stream: {exc}") from exc
    if read != decoded:
        raise AssertionError(f"FrameReader read {read!r}, FrameDecoder {decoded!r}")
    return decoded


def handshake(frames: list[bytes], *, server: bool, native: bool = True) -> Handshake:
    """One side of the handshake, fed ``frames`` (each at most the handshake's frame
    limit, as the framing allows); returns the machine.  A failed step is returned
    as the machine's state, never raised: this raises only if the machine does."""
    marker = make_marker(FLAG_PICKLE) if native else b""
    machine = Handshake(AUTHKEY, server=server, marker=marker)
    machine.start()
    for frame in frames:
        if len(frame) > HANDSHAKE_MAX_FRAME:
            continue  # the framing refuses it before the machine sees it
        step = machine.receive(frame)
        if step.error is not None and not isinstance(step.error, EXPECTED):
            raise AssertionError(f"unexpected error type {step.error!r}")
    return machine


def records(frame: bytes) -> list[Any]:
    """A native frame's records; each ``CALL``'s blob decoded and checked as the server does."""
    found: list[Any] = []
    one = only_record(frame)
    listed = list(iter_records(frame))
    if one is not None and [one[:4]] != [r[:4] for r in listed]:
        raise AssertionError("only_record and iter_records disagree")
    for op, rid, tid, aux, blob in listed:
        if op == CALL:
            found.append((rid, tid, aux, call_fields(_CODEC.loads(blob))))
        else:
            found.append((op, rid, tid, aux, bytes(blob)))
    return found


def codec(data: bytes) -> Any:
    """``NativeCodec.loads`` with the server's bound on decoded values."""
    return _CODEC.loads(data)
