"""Property tests of the parsers a peer reaches: any input ends in a value or a
``ProtocolError`` (``AuthenticationError`` in the handshake), within a time
bound (hypothesis's ``deadline``, generous: the inputs are a few KiB and take
microseconds) and a memory bound (the peak that :mod:`tracemalloc` sees,
proportional to the input).

Inputs are of two kinds: arbitrary bytes, and well-formed messages (frames,
msgpack with distproc's ext codes, a real handshake) with bytes changed, so
that the parsers' deeper paths are reached too.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from distproc.errors import ProtocolError
from distproc.wire.framing import DEFAULT_MAX_FRAME, FrameReader, encode_header
from distproc.wire.handshake import FLAG_PICKLE, Handshake, make_marker
from distproc.wire.native import NativeCodec
from distproc.wire.native.tags import RESERVED_CODES
from distproc.wire.records import CALL, CANCEL, HELLO, record

from . import targets
from .targets import EXPECTED

T = TypeVar("T")

FUZZ = settings(
    deadline=timedelta(seconds=5),
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: What decoding may hold at its peak, besides what it is given: per input byte,
#: and at most in all (the interpreter's own caches, a first list of a size).
PER_BYTE = 512
SLACK = 256 * 1024


@contextmanager
def memory_bound(limit: int) -> Iterator[None]:
    """Fail if the block's peak of new allocations is over ``limit`` bytes."""
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= limit, f"peak {peak} bytes, bound {limit}"


def value_or_error(target: Callable[..., T], *args: Any, limit: int) -> T | None:
    """``target(*args)``, or ``None`` if it refused the input with an expected error."""
    with memory_bound(limit):
        try:
            return target(*args)
        except EXPECTED:
            return None


def mutated(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    """``data`` with bytes replaced: ``(position, new byte)``, positions taken modulo length."""
    out = bytearray(data)
    for pos, byte in edits:
        if out:
            out[pos % len(out)] = byte
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=4)


# ---------------------------------------------------------------- framing
frames_st = st.lists(st.binary(max_size=600), max_size=8)


def stream_of(frames: list[bytes]) -> bytes:
    return b"".join(encode_header(len(f)) + f for f in frames)


@FUZZ
@given(data=st.binary(max_size=8192), cuts=st.binary(max_size=64))
@example(data=b"\xff\xff\xff\xff" + b"\x00" * 8, cuts=b"")  # a 64-bit length of 0
@example(data=b"\x80\x00\x00\x00", cuts=b"")  # a negative length
def test_any_byte_stream_is_frames_or_a_protocol_error(data: bytes, cuts: bytes) -> None:
    value_or_error(targets.framing, data, cuts, limit=SLACK + 4 * len(data))


@FUZZ
@given(frames=frames_st, cuts=st.binary(max_size=64))
def test_frames_come_out_as_they_went_in_however_they_are_cut(
    frames: list[bytes], cuts: bytes
) -> None:
    assert targets.framing(stream_of(frames), cuts) == frames


@FUZZ
@given(frames=frames_st, edits=EDITS, cuts=st.binary(max_size=64))
def test_a_changed_frame_stream_is_frames_or_a_protocol_error(
    frames: list[bytes], edits: list[tuple[int, int]], cuts: bytes
) -> None:
    data = mutated(stream_of(frames), edits)
    value_or_error(targets.framing, data, cuts, limit=SLACK + 4 * len(data))


@FUZZ
@given(
    declared=st.integers(FrameReader.BIG + 1, DEFAULT_MAX_FRAME),
    sent=st.integers(0, 256 * 1024),
    long_header=st.booleans(),
)
@example(declared=DEFAULT_MAX_FRAME, sent=1, long_header=False)  # 4 bytes buying 64 MiB
def test_a_length_prefix_buys_memory_only_as_its_bytes_arrive(
    declared: int, sent: int, long_header: bool
) -> None:
    """What a reader holds for a frame is bounded by what arrived, not what was declared."""
    header = encode_header(declared)
    if long_header:  # the same length in the 64-bit form
        header = b"\xff\xff\xff\xff" + declared.to_bytes(8, "big")
    data = header + b"x" * min(sent, declared)
    # Twice what arrived, a first buffer (1 MiB) and the rolling buffer (256 KiB at most).
    bound = 2 * len(data) + (1 << 20) + 2 * (256 << 10) + SLACK
    with memory_bound(bound):
        assert targets.framing(data, b"\xff", max_frame=DEFAULT_MAX_FRAME) == (
            [b"x" * declared] if sent >= declared else []
        )


# -------------------------------------------------------------- handshake
frame_st = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda rest: b"#CHALLENGE#" + rest, st.binary(max_size=120)),
    st.builds(lambda rest: b"#CHALLENGE#{sha256}" + rest, st.binary(max_size=60)),
    st.sampled_from([b"#WELCOME#", b"#FAILURE#", b"{sha256}" + b"\x00" * 32, b"\x00" * 16]),
)


@FUZZ
@given(frames=st.lists(frame_st, max_size=8), server=st.booleans(), native=st.booleans())
def test_a_peer_without_the_key_never_gets_through(
    frames: list[bytes], server: bool, native: bool
) -> None:
    with memory_bound(SLACK):
        machine = targets.handshake(frames, server=server, native=native)
    assert not machine.done
    assert machine.agreement is None or not server  # a server agrees only at the end


def honest_pair(change: int, edits: list[tuple[int, int]]) -> tuple[Handshake, Handshake, bool]:
    """A server and a client with the key; frame number ``change`` (0-5) is changed in
    transit.  Returns both sides, and whether the edits changed that frame at all."""
    server = Handshake(targets.AUTHKEY, server=True, marker=make_marker(FLAG_PICKLE))
    client = Handshake(targets.AUTHKEY, server=False, marker=make_marker(FLAG_PICKLE))
    in_flight, sent, changed = [(client, f) for f in server.start()], 0, False
    while in_flight:
        to, frame = in_flight.pop(0)
        if sent == change:
            frame, original = mutated(frame, edits), frame
            changed = frame != original
        sent += 1
        step = to.receive(frame)
        other = server if to is client else client
        in_flight += [(other, f) for f in step.send]
        if step.error is not None:
            assert isinstance(step.error, EXPECTED), step.error
            break
    return server, client, changed


def test_an_unchanged_handshake_gets_both_sides_through() -> None:
    server, client, _ = honest_pair(-1, [])
    assert server.done and client.done
    assert server.agreement is not None and server.agreement.native and server.agreement.pickle


@FUZZ
@given(change=st.integers(0, 5), edits=EDITS)
def test_a_changed_handshake_frame_is_refused(change: int, edits: list[tuple[int, int]]) -> None:
    """With any of the six frames changed the server never gets through, and the
    client only when the change was in the last frame (its ``#WELCOME#``)."""
    with memory_bound(SLACK):
        server, client, changed = honest_pair(change, edits)
    if not changed:
        assert server.done and client.done
        return
    assert not server.done
    assert client.done == (change == 5)


# ---------------------------------------------------------------- records
msgpack_int = st.integers(-(2**63), 2**64 - 1)
plain = st.recursive(
    st.none() | st.booleans() | msgpack_int | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=5) | msgpack_int, inner, max_size=5),
    max_leaves=20,
)
ext = st.builds(
    msgpack.ExtType, st.sampled_from([*RESERVED_CODES, 0, 1, 99]), st.binary(max_size=8)
)
# msgpack values with distproc's ext codes where a tag may or may not stand.
tagged = st.recursive(
    plain | ext,
    lambda inner: st.lists(inner, max_size=5)
    | st.builds(lambda code, items: [msgpack.ExtType(code, b""), *items],
                st.sampled_from(list(RESERVED_CODES)), st.lists(inner, max_size=4))
    | st.dictionaries(st.text(max_size=5) | ext, inner, max_size=4),
    max_leaves=30,
)  # fmt: skip


def packed(value: Any) -> bytes:
    out: bytes = msgpack.packb(value, use_bin_type=True)
    return out


# The inputs (issue 18): an object id that is a list or a dict, which
# raised TypeError outside any handler; a record longer than its frame.
@FUZZ
@given(frame=st.binary(max_size=4096))
@example(frame=b"".join(record(CALL, 1, 1, 0, packed([[1, 2], "get", [], {}]))))
@example(frame=b"".join(record(CALL, 2, 1, 0, packed([{"a": 1}, "put", ["x"], {}]))))
@example(frame=b"".join(record(CALL, 3, 1, 0, b"\x94")) + b"\x00" * 4)
def test_any_native_frame_is_records_or_a_protocol_error(frame: bytes) -> None:
    value_or_error(targets.records, frame, limit=SLACK + PER_BYTE * len(frame))


call_st = st.tuples(
    st.none() | st.text(max_size=8) | tagged, st.text(max_size=8) | tagged, tagged, tagged
)


@FUZZ
@given(
    calls=st.lists(st.tuples(st.integers(0, 2**64 - 1), call_st), max_size=4),
    others=st.lists(st.sampled_from([CANCEL, HELLO, 9]), max_size=2),
    edits=st.none() | EDITS,
)
def test_call_records_of_any_shape_are_calls_or_a_protocol_error(
    calls: list[tuple[int, Any]], others: list[int], edits: list[tuple[int, int]] | None
) -> None:
    parts = [b"".join(record(CALL, rid, 1, 0, packed(list(call)))) for rid, call in calls]
    parts += [b"".join(record(op, 1, 2, 3, b"x")) for op in others]
    frame = b"".join(parts)
    if edits:
        frame = mutated(frame, edits)
    found = value_or_error(targets.records, frame, limit=SLACK + PER_BYTE * len(frame))
    for item in found or []:
        if len(item) == 4:  # a call: its fields have the types the server relies on
            ident, method, args, kwds = item[3]
            assert ident is None or type(ident) is str
            assert type(method) is str and type(args) is tuple and type(kwds) is dict


# ------------------------------------------------------------------ codec
# The inputs: 1,000 nested arrays around a map whose key is a tag (it
# raised RecursionError); arrays and maps declaring 4 G items with none there;
# many empty arrays (33 million in the issue, counted against the bound).
@FUZZ
@given(data=st.binary(max_size=4096))
@example(data=b"\x91" * 1000 + b"\x81\xc7\x00\x64\x01")
@example(data=b"\xdd\xff\xff\xff\xff")
@example(data=b"\xdf\xff\xff\xff\xff")
@example(data=b"\xdd\x00\x01\x00\x00" + b"\x90" * 65536)
def test_any_payload_is_a_value_or_a_protocol_error(data: bytes) -> None:
    value_or_error(targets.codec, data, limit=SLACK + PER_BYTE * len(data))


@FUZZ
@given(value=tagged, edits=st.none() | EDITS)
def test_msgpack_with_distprocs_ext_codes_is_a_value_or_a_protocol_error(
    value: Any, edits: list[tuple[int, int]] | None
) -> None:
    data = packed(value)
    if edits:
        data = mutated(data, edits)
    value_or_error(targets.codec, data, limit=SLACK + PER_BYTE * len(data))


encodable = st.recursive(
    plain | st.datetimes() | st.dates() | st.timedeltas() | st.decimals(allow_nan=False)
    | st.uuids() | st.complex_numbers() | st.integers(),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.frozensets(st.integers() | st.text(max_size=4), max_size=4)
    | st.builds(bytearray, st.binary(max_size=8)),
    max_leaves=20,
)  # fmt: skip


@FUZZ
@given(value=encodable, edits=EDITS)
def test_a_changed_native_payload_is_a_value_or_a_protocol_error(
    value: Any, edits: list[tuple[int, int]]
) -> None:
    data = mutated(NativeCodec().dumps(value), edits)
    value_or_error(targets.codec, data, limit=SLACK + PER_BYTE * len(data))


def test_the_bounds_can_fail() -> None:
    """The memory bound notices an allocation, and the codec's refusal is a ProtocolError."""
    with pytest.raises(AssertionError, match="peak"), memory_bound(1024):
        bytearray(1 << 20)
    with pytest.raises(ProtocolError):
        targets.codec(b"\xc1")
