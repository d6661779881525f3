"""Framing, handshake and codecs, without sockets."""

from __future__ import annotations

import gc
import hmac
import multiprocessing.managers as stdlib
import os
import pickle
import socket
import struct
import threading
import weakref
from multiprocessing.reduction import ForkingPickler
from typing import Any

import pytest

from distproc.errors import AuthenticationError, FrameTooLargeError, ProtocolError
from distproc.wire import codecs, handshake
from distproc.wire.codecs import PickleCodec, XmlrpcCodec
from distproc.wire.framing import (
    IOV_MAX,
    JOIN_LIMIT,
    SMALL_PART,
    FrameDecoder,
    FrameReader,
    _SpareBuffers,
    encode_header,
    frame_views,
    recv_frame,
    send_frame_parts,
    send_views,
)
from distproc.wire.messages import Token

KEY = b"secret"


def test_decoder_reassembles_split_frames() -> None:
    data = b"".join(encode_header(len(p)) + p for p in (b"a", b"", b"hello" * 100))
    dec = FrameDecoder()
    frames = []
    for i in range(len(data)):
        frames += dec.feed(data[i : i + 1])
    assert frames == [b"a", b"", b"hello" * 100]
    assert dec.pending == 0


def test_decoder_refuses_before_allocating() -> None:
    dec = FrameDecoder(max_size=256)
    with pytest.raises(FrameTooLargeError):
        dec.feed(struct.pack("!i", 257))
    assert FrameDecoder(256).feed(struct.pack("!i", 256) + b"x" * 256) == [b"x" * 256]


def test_decoder_64bit_length_and_negative() -> None:
    dec = FrameDecoder(max_size=10)
    with pytest.raises(FrameTooLargeError):
        dec.feed(struct.pack("!i", -1) + struct.pack("!Q", 2**40))
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(struct.pack("!i", -5))
    assert FrameDecoder().feed(struct.pack("!i", -1) + struct.pack("!Q", 2) + b"ok") == [b"ok"]


def test_modern_challenge_round_trip() -> None:
    message = handshake.make_challenge()
    assert message.startswith(b"{sha256}") and len(message) == 48
    response = handshake.create_response(KEY, message)
    assert response == b"{sha256}" + hmac.new(KEY, message, "sha256").digest()
    handshake.verify_response(KEY, message, response)
    with pytest.raises(AuthenticationError):
        handshake.verify_response(b"other", message, response)


def test_legacy_forms() -> None:
    legacy = b"x" * 20  # what CPython <= 3.11 sends
    response = handshake.create_response(KEY, legacy)
    assert response == hmac.new(KEY, legacy, "md5").digest()
    # a legacy peer answers our prefixed challenge with raw MD5 of all of it
    message = handshake.make_challenge()
    handshake.verify_response(KEY, message, hmac.new(KEY, message, "md5").digest())
    with pytest.raises(AuthenticationError):
        handshake.verify_response(
            KEY, message, hmac.new(KEY, message, "md5").digest(), allow_md5=False
        )
    with pytest.raises(AuthenticationError):
        handshake.create_response(KEY, legacy, allow_md5=False)


def test_short_or_unknown_challenges_fail() -> None:
    with pytest.raises(AuthenticationError):
        handshake.create_response(KEY, b"short")
    with pytest.raises(AuthenticationError):
        handshake.create_response(KEY, b"{whirlpool}" + b"x" * 40)


def test_tokens_travel_under_stdlib_names() -> None:
    codec = PickleCodec()
    data = codec.dumps(Token("q", ("127.0.0.1", 5), "1f"))
    assert b"distproc" not in data
    theirs = pickle.loads(data)
    assert type(theirs) is stdlib.Token
    assert (theirs.typeid, theirs.address, theirs.id) == ("q", ("127.0.0.1", 5), "1f")
    ours = codec.loads(pickle.dumps(stdlib.Token("q", ("h", 1), "2")))
    assert type(ours) is Token and ours.id == "2"


def test_xmlrpc_codec_matches_stdlib_shape() -> None:
    codec = XmlrpcCodec()
    assert codec.loads(codec.dumps(("#RETURN", (1, "a", None)))) == ["#RETURN", [1, "a", None]]


# ------------------------------------------------------- large values, no copies
BIG = os.urandom(3 * 1024 * 1024 + 17)


def test_pickle_parts_are_the_pickle_and_share_large_payloads() -> None:
    codec = PickleCodec()
    message: tuple[Any, ...]
    for message in [("#RETURN", BIG), (None, "put", (BIG, "é" * 70_000), {}), ("#RETURN", 1)]:
        parts = codec.dumps_parts(message)
        assert b"".join(parts) == codec.dumps(message) == bytes(ForkingPickler.dumps(message))
    parts = codec.dumps_parts(("#RETURN", BIG))
    assert any(part is BIG for part in parts)  # the payload itself, not a copy


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda w: w.__name__)
def test_pickle_loads_large_and_small_from_any_buffer(wrap: Any) -> None:
    codec = PickleCodec()
    for message in [("#RETURN", BIG), ("#RETURN", (1, "a"))]:
        assert codec.loads(wrap(bytearray(pickle.dumps(message)))) == message
    token = codec.loads(wrap(bytearray(pickle.dumps(stdlib.Token("q", ("h", 1), "2")))))
    assert type(token) is Token and token.id == "2"
    # a stdlib token inside a large pickle still loads as distproc's own
    value = codec.loads(wrap(bytearray(pickle.dumps((stdlib.Token("q", ("h", 1), "2"), BIG)))))
    assert type(value[0]) is Token and value[1] == BIG


def test_pickle_loads_protocol_0_lines() -> None:
    codec = PickleCodec()
    message = ("#RETURN", {"a": [1, 2.5, "x" * 100_000]}, stdlib.Token("q", ("h", 1), "2"))
    value = codec.loads(memoryview(pickle.dumps(message, protocol=0)))
    assert value[:2] == message[:2] and type(value[2]) is Token


def test_spare_buffers_are_lent_again_only_when_free() -> None:
    spares = _SpareBuffers()
    assert spares.take(100_000) is None  # nothing kept yet
    spares.keep(bytearray(100_000))
    in_use = memoryview(spares._buffers[0])  # a frame handed out from it
    assert spares.take(90_000) is None  # still in use
    in_use.release()
    del in_use
    free = spares.take(90_000)  # free again: a smaller frame fits
    assert free is spares._buffers[0]
    del free
    assert spares.take(100_001) is None  # too small for this one
    frame = memoryview(spares._buffers[0])[10:20]  # a slice of a frame keeps it busy
    assert spares.take(90_000) is None
    frame.release()
    spares.keep(bytearray(_SpareBuffers.KEEP + 1))  # too large to keep
    assert all(len(buf) <= _SpareBuffers.KEEP for buf in spares._buffers)


def test_frame_reader_receives_large_frames_in_place() -> None:
    reader = FrameReader()
    payload = os.urandom(300_000)
    data = encode_header(len(payload)) + payload + encode_header(3) + b"abc"
    frames = []
    pos = 0
    while pos < len(data):
        buf = reader.get_buffer()
        n = min(len(buf), 70_000, len(data) - pos)
        buf[:n] = data[pos : pos + n]
        reader.buffer_updated(n)
        pos += n
        while (frame := reader.next_frame()) is not None:
            frames.append(bytes(frame))
        if pos < 4 + len(payload):  # inside the large frame: the reader says how much is left
            assert reader.missing() == 4 + len(payload) - pos
    assert frames == [payload, b"abc"]
    assert reader.missing() == 0


def test_pickle_parts_never_hold_a_mutable_buffer() -> None:
    """Protocol 5 hands a large bytearray to the file as it is; the parts may be
    written after the caller has moved on, so they must not share it."""
    codec = PickleCodec(protocol=5)
    data = bytearray(BIG)
    parts = codec.dumps_parts(("#RETURN", data))
    assert all(type(part) is bytes for part in parts)
    data[:4] = b"\x00\x00\x00\x00"  # the caller changes its buffer afterwards
    assert codec.loads(b"".join(parts))[1] == BIG


class _Thing:
    def __init__(self, value: int) -> None:
        self.value = value


class _PicklesWith:
    """Pickling it pickles something else with the same codec, from a reducer."""

    def __init__(self, codec: PickleCodec) -> None:
        self.codec = codec
        self.inner: list[Any] = []

    def __reduce__(self) -> tuple[Any, ...]:
        self.inner = self.codec.dumps_parts(("inner", [1, 2, 3]))
        return list, ([4, 5],)


def test_pickle_codec_reuses_its_pickler_safely() -> None:
    codec = PickleCodec()
    message: Any = ("#RETURN", [1, "a", (2.5, None)])
    expected = bytes(ForkingPickler.dumps(message))
    assert b"".join(codec.dumps_parts(message)) == expected
    assert b"".join(codec.dumps_parts(message)) == expected  # the same pickler, again
    # a reducer that pickles with the codec while the codec pickles
    nested = _PicklesWith(codec)
    outer = codec.dumps_parts(("#RETURN", nested))
    assert codec.loads(b"".join(outer)) == ("#RETURN", [4, 5])
    assert codec.loads(b"".join(nested.inner)) == ("inner", [1, 2, 3])
    # a dump that fails leaves nothing behind for the next one
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        codec.dumps_parts(("#RETURN", lambda: None))
    assert b"".join(codec.dumps_parts(message)) == expected
    # nothing pickled stays alive in the pickler's memo
    thing = _Thing(7)
    alive = weakref.ref(thing)
    assert codec.loads(b"".join(codec.dumps_parts(("#RETURN", thing, thing))))[1].value == 7
    del thing
    assert alive() is None


def test_pickle_codec_frees_its_pickler_after_a_large_message_at_once() -> None:
    """Not at the next garbage collection: until then the pickler's file held
    the large payload, and each later one was unpickled into fresh pages."""

    def reused() -> int:
        return sum(type(o) is codecs._Reused for o in gc.get_objects())

    codec = PickleCodec()
    gc.collect()
    gc.disable()
    try:
        before = reused()
        codec.dumps_parts(("#RETURN", 1))
        assert reused() == before + 1  # kept for the next message
        parts = codec.dumps_parts(("#RETURN", BIG))
        assert any(part is BIG for part in parts)
        assert reused() == before  # dropped, and gone without a collection
    finally:
        gc.enable()


def test_pickle_codec_pickles_on_many_threads_at_once() -> None:
    codec = PickleCodec()
    start = threading.Barrier(4)
    wrong: list[int] = []

    def work(n: int) -> None:
        start.wait()
        for i in range(2_000):
            message = ("#RETURN", n, [i] * (i % 7), "x" * (i % 50))
            if codec.loads(b"".join(codec.dumps_parts(message))) != message:
                wrong.append(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not wrong


@pytest.mark.slow
def test_frame_reader_cuts_out_every_whole_frame_at_once() -> None:
    payloads = [b"a", b"", b"bc" * 10, os.urandom(300_000), b"d" * 5000, b"e"]
    data = b"".join(encode_header(len(p)) + p for p in payloads)
    for chunk in (1, 3, 7, 4096, 70_000, len(data)):
        reader = FrameReader()
        frames: list[bytes] = []
        pos = 0
        while pos < len(data):
            buf = reader.get_buffer()
            n = min(len(buf), chunk, len(data) - pos)
            buf[:n] = data[pos : pos + n]
            del buf  # as recv_into() would: the reader may grow its buffer next
            reader.buffer_updated(n)
            pos += n
            frames.extend(bytes(frame) for frame in reader.frames())
        assert frames == payloads, chunk
        assert reader.frames() == []
    reader = FrameReader(max_size=100)
    buf = reader.get_buffer()
    data = encode_header(3) + b"abc" + encode_header(101) + b"x" * 101
    buf[: len(data)] = data
    del buf
    reader.buffer_updated(len(data))
    with pytest.raises(FrameTooLargeError):
        reader.frames()


def _received(sender: Any) -> bytes:
    """Run ``sender(sock)`` on one end of a socketpair; return the frame read at the other."""
    left, right = socket.socketpair()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(recv_frame(right, 1 << 30)))
    reader.start()
    try:
        sender(left)
    finally:
        left.close()  # a sender that fails leaves the reader an end of file, not a wait
        reader.join(30)
        right.close()
    assert got, "the reader got no frame"
    return got[0]


def test_a_large_frame_of_many_small_parts_is_sent_whole() -> None:
    # A batch of records from many threads: more parts than one sendmsg() takes.
    parts: list[codecs.BytesLike] = [b"%05d|" % i * 5 for i in range(3 * IOV_MAX)]
    assert sum(map(len, parts)) > JOIN_LIMIT
    assert _received(lambda sock: send_frame_parts(sock, parts)) == b"".join(parts)


def test_frame_views_copy_only_small_parts() -> None:
    big = bytearray(os.urandom(SMALL_PART))
    small = [b"x" * 10, b"", b"y" * 20]
    views = frame_views(b"HDR", [*small, big, *small, memoryview(big)])
    assert [bytes(v) for v in views] == [
        b"HDR" + b"x" * 10 + b"y" * 20,
        big,
        b"x" * 10 + b"y" * 20,
        big,
    ]
    assert views[1].obj is big and views[3].obj is big  # sent from where it is


def test_send_views_never_passes_more_buffers_than_a_call_takes() -> None:
    views = [memoryview(b"%04d" % i) for i in range(IOV_MAX + 10)]
    data = b"".join(views)

    def send(sock: socket.socket) -> None:
        sock.sendall(encode_header(len(data)))
        send_views(sock, list(views))

    assert _received(send) == data
