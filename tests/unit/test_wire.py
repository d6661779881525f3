"""Framing, handshake and codecs, without sockets."""

from __future__ import annotations

import hmac
import multiprocessing.managers as stdlib
import pickle
import struct

import pytest

from distproc.errors import AuthenticationError, FrameTooLargeError, ProtocolError
from distproc.wire import handshake
from distproc.wire.codecs import PickleCodec, XmlrpcCodec
from distproc.wire.framing import FrameDecoder, encode_header
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
