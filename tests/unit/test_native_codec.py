"""The native codec (distproc.wire.native): exact round trips, refusals, and no unpickling."""

from __future__ import annotations

import ast
import builtins
import datetime as dt
import decimal
import gc
import importlib
import inspect
import math
import pickle
import pkgutil
import queue
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from enum import IntEnum
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from distproc.errors import ProtocolError, RemoteError
from distproc.wire import native
from distproc.wire.codecs import Codec
from distproc.wire.messages import Token
from distproc.wire.native import NativeCodec, decode, encode, registry, tags

CODEC = NativeCodec()
UTC = dt.timezone.utc


def tag(code: int) -> Any:
    return msgpack.ExtType(code, b"")


def raw(obj: Any) -> bytes:
    """Hand-made msgpack (what a peer could send), packed without the codec."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, (set, frozenset)):
        return {(type(x), x) for x in a} == {(type(x), x) for x in b}
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, (dt.datetime, dt.time)):
        return (
            a == b
            and a.fold == b.fold
            and a.tzinfo == b.tzinfo
            and (a.tzinfo is None or a.tzname() == b.tzname())
        )
    if isinstance(a, BaseException):
        return same(a.args, b.args)
    if isinstance(a, Token):
        return same((a.typeid, a.address, a.id), (b.typeid, b.address, b.id))
    return bool(a == b)


def round_trip(obj: Any) -> Any:
    return CODEC.loads(CODEC.dumps(obj))


def check(obj: Any) -> None:
    back = round_trip(obj)
    assert same(obj, back), (obj, back)


# ---------------------------------------------------------------------------
# Round trips.

SCALARS = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**63),
    0.0,
    -0.0,
    1.5,
    float("inf"),
    float("-inf"),
    float("nan"),
    "",
    "héllo ✓",
    b"",
    b"\x00\xff" * 100,
    bytearray(),
    bytearray(b"\x80mutable"),
]

BIG_INTS = [2**64, -(2**63) - 1, -(2**64), 2**1000 + 7, -(2**1000), 2**127, -(2**127)]

DATES = [
    dt.datetime(2024, 2, 29, 23, 59, 58, 999999),
    dt.datetime.min,
    dt.datetime.max,
    dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(-dt.timedelta(hours=23, minutes=59, seconds=1))),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(seconds=1, microseconds=5))),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=-5), "EST")),
    dt.datetime(2021, 11, 7, 1, 30, fold=1),
    dt.date(2024, 2, 29),
    dt.date.min,
    dt.date.max,
    dt.time(),
    dt.time(23, 59, 59, 999999),
    dt.time(12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
    dt.time(1, 30, fold=1),
    dt.timedelta(),
    dt.timedelta(days=-3, seconds=5, microseconds=7),
    dt.timedelta.min,
    dt.timedelta.max,
]

OTHERS = [
    decimal.Decimal("1.10"),
    decimal.Decimal("-0"),
    decimal.Decimal("NaN"),
    decimal.Decimal("-Infinity"),
    decimal.Decimal("1E+999999"),
    decimal.Decimal("3.14159265358979323846264338327950288419716939937510"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    uuid.uuid4(),
    1 + 2j,
    complex(-0.0, float("inf")),
    (),
    (1,),
    (1, "a", b"b", None),
    [],
    [1, [2, [3]]],
    {},
    {"a": 1, "b": [1, 2]},
    set(),
    {1, "a", (1, 2), frozenset({3})},
    frozenset(),
    frozenset({1, 2, "x"}),
]


@pytest.mark.parametrize("obj", SCALARS + BIG_INTS + DATES + OTHERS, ids=repr)
def test_round_trip(obj: Any) -> None:
    check(obj)


def test_sample_message() -> None:
    msg: tuple[Any, ...] = (0, 17, 3, "1f", "put", (12345,), {}, False)
    check(msg)
    assert len(CODEC.dumps(msg)) < len(pickle.dumps(msg))


def test_tuples_and_lists_stay_apart() -> None:
    check(([1, (2, [3, (4,)])], [(), []], ((),)))
    check([(1, 2), [1, 2]])


def test_dict_keys_of_every_hashable_kind() -> None:
    check(
        {
            1: "int",
            -(2**70): "big int",
            "s": "str",
            b"b": "bytes",
            1.5: "float",
            None: "none",
            (1, ("nested", 2)): "tuple",
            frozenset({1, 2}): "frozenset",
            dt.date(2020, 1, 1): "date",
            decimal.Decimal("2.5"): "decimal",
            uuid.UUID(int=5): "uuid",
            3j: "complex",
        }
    )


def test_bytearray_anywhere_stays_a_bytearray() -> None:
    ba = bytearray(b"x")
    for obj in [
        [ba],
        [[[ba, bytearray()]]],
        {"k": ba},
        {"k": [{"j": bytearray()}]},
        (ba,),
        (bytearray(),),
        (1, [2, {"x": ba}]),
        ((ba, [ba]),),
        [(ba,), {(1, 2): [ba]}],
        {1: ba, 2: b"bytes"},
    ]:
        check(obj)


def test_nested_arbitrarily() -> None:
    leaf = [
        None,
        2**80,
        -2.5,
        "s",
        b"b",
        bytearray(b"ba"),
        dt.datetime(2020, 5, 17, 1, 2, 3, 4, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.date(2020, 5, 17),
        dt.time(1, 2, 3),
        dt.timedelta(seconds=-1),
        decimal.Decimal("0.1"),
        uuid.UUID(int=1),
        2 - 1j,
        frozenset({(1, 2)}),
        {3},
        Token("Queue", ("h", 1), "1a"),
        ValueError("v", 1),
    ]
    obj: Any = leaf
    for depth in range(30):
        obj = (
            (obj, [obj], {depth: obj, (depth, "k"): frozenset({depth})})
            if depth % 10 == 0
            else [
                obj,
                (depth,),
            ]
        )
    back = round_trip(obj)
    assert same(obj, back)


def test_deeply_nested_tuples() -> None:
    obj: Any = "bottom"
    for _ in range(200):
        obj = (obj,)
    check(obj)


def test_large_values() -> None:
    check(list(range(100_000)))
    check({str(i): i for i in range(10_000)})
    check(b"x" * (3 << 20))  # past the size at which a thread's packer is replaced
    check(bytearray(b"y" * (3 << 20)))
    check((1, 2, 3))


def test_loads_accepts_buffers() -> None:
    payload = b"junk" + CODEC.dumps(("frame", (1, bytearray(b"2"))))
    view = memoryview(payload)[4:]
    assert same(CODEC.loads(view), ("frame", (1, bytearray(b"2"))))
    assert same(CODEC.loads(bytearray(payload[4:])), ("frame", (1, bytearray(b"2"))))


def test_codec_interface() -> None:
    assert isinstance(CODEC, Codec)
    assert NativeCodec.name == "native"
    assert isinstance(CODEC.dumps(1), bytes)


def test_threads_share_nothing_mutable() -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(2000):
                msg = (n, i, "put", ((n, i), [bytearray(b"%d" % i)]), {"k": (i,)}, False)
                assert same(CODEC.loads(CODEC.dumps(msg)), msg)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ---------------------------------------------------------------------------
# The wire format: the documented ext codes.


@pytest.mark.parametrize(
    ("obj", "code"),
    [
        ((1,), 100),
        ({1}, 101),
        (frozenset({1}), 102),
        (bytearray(b"x"), 103),
        (2**64, 104),
        (dt.datetime(2020, 1, 1), 105),
        (dt.date(2020, 1, 1), 106),
        (dt.time(1), 107),
        (dt.timedelta(1), 108),
        (decimal.Decimal(1), 109),
        (uuid.UUID(int=1), 110),
        (1j, 111),
        (ValueError("x"), 112),
        (Token("T", "/tmp/sock", None), 113),
    ],
    ids=repr,
)
def test_ext_codes(obj: Any, code: int) -> None:
    decoded = msgpack.unpackb(CODEC.dumps(obj), strict_map_key=False)
    assert type(decoded) is list
    assert decoded[0] == tag(code)


def test_wire_examples() -> None:
    assert CODEC.dumps((1, "a")) == b"\x93\xc7\x00\x64\x01\xa1a"
    assert CODEC.dumps([1, "a"]) == b"\x92\x01\xa1a"
    assert CODEC.loads(raw([tag(100), 1, [tag(100)]])) == (1, ())
    assert CODEC.loads(raw([tag(103), b"ab"])) == bytearray(b"ab")
    assert CODEC.loads(raw([tag(104), (2**64).to_bytes(9, "big")])) == 2**64
    # msgpack's timestamp extension, never written by the codec, reads as an aware datetime.
    assert CODEC.loads(raw(msgpack.Timestamp(1, 0))) == dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------
# Refusals.


class Color(IntEnum):
    RED = 1


class MyStr(str):
    pass


class Plain:
    pass


class OtherTz(dt.tzinfo):
    def utcoffset(self, d: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=1)

    def dst(self, d: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, d: dt.datetime | None) -> str:
        return "X"


@pytest.mark.parametrize(
    ("obj", "name"),
    [
        (object(), "builtins.object"),
        (Plain(), "Plain"),
        (Color.RED, "Color"),
        (MyStr("s"), "MyStr"),
        (OrderedDict(a=1), "collections.OrderedDict"),
        (memoryview(b"abc"), "builtins.memoryview"),
        (msgpack.ExtType(100, b""), "ExtType"),
        (msgpack.Timestamp(0, 0), "Timestamp"),
        (len, "builtin_function_or_method"),
        (lambda: 0, "function"),
        (Plain, "builtins.type"),
        (range(3), "builtins.range"),
        ([1, [2, {"k": object()}]], "builtins.object"),
        ({"k": memoryview(b"")}, "builtins.memoryview"),
        ((1, (2, Plain())), "Plain"),
        ({2, Color.RED}, "Color"),
        ({(1, msgpack.ExtType(1, b"")): 1}, "ExtType"),
    ],
    ids=repr,
)
def test_unknown_types_are_refused(obj: Any, name: str) -> None:
    with pytest.raises(TypeError) as info:
        CODEC.dumps(obj)
    message = str(info.value)
    assert name in message
    assert "distproc.wire.native.register_type" in message
    assert "'pickle' serializer on a trusted network" in message
    check((1, "still works after a refusal"))


def test_only_fixed_offset_timezones() -> None:
    for obj in (dt.datetime(2020, 1, 1, tzinfo=OtherTz()), dt.time(1, tzinfo=OtherTz())):
        with pytest.raises(TypeError, match="OtherTz"):
            CODEC.dumps(obj)


# ---------------------------------------------------------------------------
# Exceptions.


class UnknownError(Exception):
    pass


class RegisteredError(Exception):
    pass


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad", 1),
        KeyError("k"),
        ZeroDivisionError(),
        StopIteration(5),
        OSError(2, "No such file", "name.txt"),
        FileNotFoundError(2, "No such file", "a", None, "b"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        queue.Empty(),
        queue.Full(),
        RemoteError("remote traceback\n"),
        ProtocolError("bad frame"),
        TypeError(bytearray(b"x"), [bytearray()], (1,)),
    ],
    ids=repr,
)
def test_known_exceptions_are_rebuilt(exc: BaseException) -> None:
    back = round_trip(exc)
    assert type(back) is type(exc)
    assert same(back.args, exc.args)
    assert str(back) == str(exc)


def test_oserror_keeps_file_names() -> None:
    back = round_trip(FileNotFoundError(2, "No such file", "a", None, "b"))
    assert (back.errno, back.filename, back.filename2) == (2, "a", "b")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is new in 3.11")
def test_exception_group() -> None:
    group = builtins.ExceptionGroup("many", [ValueError(1), KeyError(2)])  # type: ignore[attr-defined]
    back = round_trip(group)
    assert type(back) is type(group)
    assert [type(e) for e in back.exceptions] == [ValueError, KeyError]


def test_unknown_exception_becomes_remote_error() -> None:
    back = round_trip(UnknownError("boom", 42))
    assert type(back) is RemoteError
    name = f"{__name__}.UnknownError"
    assert back.args == (f"{name}: ('boom', 42)",)
    assert f"{name}: ('boom', 42)" in str(back)
    assert round_trip(UnknownError()).args == (name,)


def test_exception_with_unserializable_args_or_str() -> None:
    back = round_trip(ValueError(Plain()))
    assert type(back) is ValueError
    assert len(back.args) == 1 and "Plain object" in back.args[0]
    back = round_trip(Unprintable("x"))
    assert type(back) is RemoteError
    assert "unprintable" in back.args[0]


def test_registered_exception(restore_registry: None) -> None:
    name = f"{__name__}.RegisteredError"
    assert type(round_trip(RegisteredError("r"))) is RemoteError
    native.register_exception(RegisteredError)
    back = round_trip(RegisteredError("r", 2))
    assert type(back) is RegisteredError and back.args == ("r", 2)
    with pytest.raises(ValueError, match="already registered"):
        native.register_exception(RegisteredError)
    with pytest.raises(ValueError, match="already registered"):
        native.register_exception(UnknownError, name)
    with pytest.raises(ValueError, match="already registered"):
        native.register_exception(ValueError)
    with pytest.raises(ValueError, match="already registered"):
        native.register_exception(UnknownError, "queue.Empty")
    with pytest.raises(TypeError):
        native.register_exception(int)  # type: ignore[arg-type]
    native.unregister_exception(RegisteredError)
    assert type(round_trip(RegisteredError("r"))) is RemoteError


def test_exception_types_are_never_looked_up(no_unpickling: None) -> None:
    for name in ("builtins.eval", "builtins.exec", "os.system", "posix.system", "builtins.type"):
        payload = raw([tag(112), name, "msg", "__import__('os').system('false')"])
        back = CODEC.loads(payload)
        assert type(back) is RemoteError
        assert back.args == (f"{name}: msg",)


def test_builtin_exception_with_wrong_args_becomes_remote_error() -> None:
    back = CODEC.loads(raw([tag(112), "builtins.UnicodeDecodeError", "m", "only one"]))
    assert type(back) is RemoteError
    assert back.args == ("builtins.UnicodeDecodeError: m",)


# ---------------------------------------------------------------------------
# User types.


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


class Box:
    def __init__(self, content: Any) -> None:
        self.content = content


@pytest.fixture
def restore_registry() -> Iterator[None]:
    encoders, decoders = dict(encode.ENCODERS), dict(decode.DECODERS)
    user_types = dict(registry.USER_TYPES)
    exc_by_name, exc_names = dict(decode.EXC_BY_NAME), dict(encode.EXC_NAMES)
    yield
    saved: list[tuple[dict[Any, Any], dict[Any, Any]]] = [
        (encode.ENCODERS, encoders),
        (decode.DECODERS, decoders),
        (registry.USER_TYPES, user_types),
        (decode.EXC_BY_NAME, exc_by_name),
        (encode.EXC_NAMES, exc_names),
    ]
    for live, before in saved:
        live.clear()
        live.update(before)


def point_decode(value: Any) -> Point:
    x, y = value
    return Point(x, y)


def test_register_type(restore_registry: None) -> None:
    codec = NativeCodec()  # created before the registration: sees it all the same
    with pytest.raises(TypeError, match="register_type"):
        codec.dumps(Point(1, 2))
    native.register_type(Point, 7, lambda p: (p.x, p.y), point_decode)
    assert codec.loads(codec.dumps(Point(1, 2))) == Point(1, 2)
    assert msgpack.unpackb(codec.dumps(Point(1, 2)))[0] == tag(7)
    # Nested, as keys, and holding other encoded values.
    native.register_type(Box, 99, lambda b: [b.content, bytearray(b"!")], lambda v: Box(v[0]))
    obj = {Point(1, 2): [Box((Point(3, 4), dt.date(2020, 1, 1)))]}
    back = codec.loads(codec.dumps(obj))
    ((key, [box]),) = back.items()
    assert key == Point(1, 2)
    assert type(box) is Box and box.content == (Point(3, 4), dt.date(2020, 1, 1))
    native.unregister_type(Point)
    with pytest.raises(TypeError):
        codec.dumps(Point(1, 2))
    with pytest.raises(ProtocolError, match="unknown ext code 7"):
        codec.loads(raw([tag(7), [1, 2]]))


def test_register_type_errors(restore_registry: None) -> None:
    def enc(p: Point) -> Any:
        return p.x

    native.register_type(Point, 5, enc, point_decode)
    with pytest.raises(ValueError, match="ext code 5 is already registered"):
        native.register_type(Box, 5, enc, point_decode)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already encodable"):
        native.register_type(Point, 6, enc, point_decode)
    for builtin_type in (tuple, int, str, bytes, list, dict, set, dt.datetime, Token, bytearray):
        with pytest.raises(ValueError):
            native.register_type(builtin_type, 8, enc, point_decode)  # type: ignore[arg-type]
    for code in (100, 113, 127):
        with pytest.raises(ValueError, match="out of range: expected 0-99"):
            native.register_type(Box, code, enc, point_decode)  # type: ignore[arg-type]
    for bad_code in (-1, 128, 1.0, True):
        with pytest.raises(ValueError, match="out of range"):
            native.register_type(Box, bad_code, enc, point_decode)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range: expected 100-127"):
        native.register_type(Box, 99, enc, point_decode, reserved=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already registered"):
        native.register_type(Box, 113, enc, point_decode, reserved=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native.register_type(Point(1, 2), 9, enc, point_decode)  # type: ignore[arg-type]
    native.register_type(Box, 127, lambda b: b.content, Box, reserved=True)
    assert round_trip(Box(3)).content == 3
    user, reserved = native.USER_CODES, native.RESERVED_CODES
    assert (user, reserved) == (range(100), range(100, 128))


def test_encode_may_call_dumps(restore_registry: None) -> None:
    native.register_type(Box, 11, lambda b: CODEC.dumps(b.content), lambda v: Box(CODEC.loads(v)))
    back = round_trip((1, Box((2, Box([3]))), 4))
    assert back[0] == 1 and back[2] == 4
    assert back[1].content[0] == 2 and back[1].content[1].content == [3]


def test_decode_errors_are_protocol_errors(restore_registry: None) -> None:
    native.register_type(Point, 12, lambda p: (p.x, p.y), point_decode)
    with pytest.raises(ProtocolError, match="ValueError"):
        CODEC.loads(raw([tag(12), [1, 2, 3]]))


# ---------------------------------------------------------------------------
# Token.


@pytest.mark.parametrize(
    "token",
    [
        Token("Queue", ("127.0.0.1", 50000), "7f3a"),
        Token("dict", "/tmp/distproc-sock", None),
        Token("Namespace", ("::1", 1, 0, 0), "1"),
    ],
    ids=repr,
)
def test_token_round_trip(token: Token) -> None:
    back = round_trip(token)
    assert type(back) is Token
    assert (back.typeid, back.address, back.id) == (token.typeid, token.address, token.id)
    assert type(back.address) is type(token.address)
    reply = ("#PROXY", (["get", "put"], token))
    assert same(round_trip(reply), reply)


@pytest.mark.parametrize(
    "value",
    [
        [1, [tag(100), "h", 1], "id"],
        ["T", ["h", 1], "id"],
        ["T", [tag(100), "h", 1], 5],
        ["T", [tag(100), "h", 1]],
        "T",
    ],
    ids=repr,
)
def test_malformed_token(value: Any) -> None:
    with pytest.raises(ProtocolError, match="Token"):
        CODEC.loads(raw([tag(113), value]))


# ---------------------------------------------------------------------------
# Malformed input.


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",  # never used in msgpack
        b"\x92\x01",  # truncated array
        b"\x01\x02",  # trailing data
        b"\xa2\xff\xfe",  # invalid utf-8 in a str
        b"\x91" * 5000 + b"\x00",  # nested too deep
        b"\x81\x91\x01\x02",  # a list as a map key
        raw(msgpack.ExtType(50, b"")),  # unknown ext code
        b"\xd4\xfb\x00",  # negative ext code
        raw([msgpack.ExtType(100, b"payload"), 1]),  # tag with a payload
        raw([msgpack.ExtType(105, b"\x00"), 2020]),
        raw(tag(100)),  # a bare tag
        raw([1, tag(100)]),  # a tag that heads nothing
        raw([[tag(100), 1], [2, tag(101)]]),
        raw({"k": tag(100)}),
        raw({tag(101): 1}),
        raw([tag(101), [1]]),  # a list in a set: unhashable
        raw([tag(103), "not bin"]),
        raw([tag(103)]),
        raw([tag(104), 5]),
        raw([tag(105), 2020, 13, 1, 0, 0, 0, 0, 0]),  # month 13
        raw([tag(105), 2020, 1, 1, 0, 0, 0, 0]),  # too few fields
        raw([tag(105), 2020, 1, 1, 0, 0, 0, 0, 0, 86400 * 10**6, None]),  # offset of a day
        raw([tag(105), 2020, 1, 1, 0, 0, 0, 0, 0, "+1", None]),
        raw([tag(105), 2020.0, 1, 1, 0, 0, 0, 0, 0]),
        raw([tag(105), 2020, 1, 1, 0, 0, 0, 0, 2]),  # fold 2
        raw([tag(106), 2020, 2, 30]),
        raw([tag(107), 24, 0, 0, 0, 0]),
        raw([tag(108), 10**10, 0, 0]),
        raw([tag(109), 1]),
        raw([tag(109), "not a number"]),
        raw([tag(110), b"short"]),
        raw([tag(111), 1, 2]),
        raw([tag(112), "builtins.ValueError"]),
        raw([tag(112), 1, "m"]),
        raw([tag(112), "builtins.ValueError", "m", [tag(100), 1, tag(100)]]),
        raw([tag(113), ["T", ("h", 1), "id"], "extra"]),
    ],
    ids=repr,
)
def test_malformed_input_raises_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed native payload"):
        CODEC.loads(payload)
    check((1, "still works"))


def test_protocol_error_is_an_oserror_and_keeps_the_cause() -> None:
    with pytest.raises(OSError) as info:
        CODEC.loads(b"\x92\x01")
    assert isinstance(info.value, ProtocolError)
    assert isinstance(info.value.__cause__, ValueError)


def test_stray_tag_found_while_other_threads_decode() -> None:
    # Tags held by a concurrent decode make the reference counts differ: the
    # codec then looks through the result itself.
    held = [tags.TUPLE_DECODED, tags.Tag((None, tags.LIVE))]
    try:
        assert same(CODEC.loads(CODEC.dumps((1, [2, {3: (4,)}]))), (1, [2, {3: (4,)}]))
        with pytest.raises(ProtocolError, match="ext tag"):
            CODEC.loads(raw([1, [2, {3: [4, tag(100)]}]]))
    finally:
        del held


# ---------------------------------------------------------------------------
# Never unpickles.


def test_module_never_imports_an_unpickler() -> None:
    modules = [
        importlib.import_module(f"{native.__name__}.{info.name}")
        for info in pkgutil.iter_modules(native.__path__)
    ]
    assert len(modules) >= 5  # every module of the package, not its face alone
    imported: set[str] = set()
    called: set[str] = set()
    trees = [ast.parse(inspect.getsource(module)) for module in (native, *modules)]
    for node in (node for tree in trees for node in ast.walk(tree)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called.add(node.func.id)
    assert not imported & {"pickle", "marshal", "copyreg", "shelve", "importlib", "dill"}
    assert not called & {"eval", "exec", "compile", "__import__"}


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the native codec must never unpickle")

    for name in ("loads", "load", "Unpickler", "_loads", "_load", "_Unpickler"):
        if hasattr(pickle, name):
            monkeypatch.setattr(pickle, name, forbidden)
    import marshal

    monkeypatch.setattr(marshal, "loads", forbidden)
    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)


class Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("pwned",))


EVIL_PICKLE = pickle.dumps(Evil())


def test_loads_never_unpickles(no_unpickling: None) -> None:
    assert b"print" in EVIL_PICKLE
    for obj in [
        EVIL_PICKLE,
        (EVIL_PICKLE,),
        [bytearray(EVIL_PICKLE)],
        {EVIL_PICKLE: EVIL_PICKLE},
        ValueError(EVIL_PICKLE),
        Token("T", ("h", 1), "x"),
        (queue.Empty(), dt.datetime(2020, 1, 1, tzinfo=UTC), decimal.Decimal(1), uuid.UUID(int=3)),
    ]:
        payload = CODEC.dumps(obj)
        assert same(CODEC.loads(payload), obj)
    assert CODEC.loads(raw(EVIL_PICKLE)) == EVIL_PICKLE
    assert CODEC.loads(raw([EVIL_PICKLE, "x"])) == [EVIL_PICKLE, "x"]


def test_pickle_blobs_as_ext_payloads_are_rejected(no_unpickling: None) -> None:
    for code in (0, 7, 100, 112, 113, 127):
        with pytest.raises(ProtocolError):
            CODEC.loads(raw(msgpack.ExtType(code, EVIL_PICKLE)))
    with pytest.raises(ProtocolError):
        CODEC.loads(EVIL_PICKLE)  # a pickle is not msgpack


class _SendsOnCollection:
    """Garbage whose finalizer encodes a message, as a proxy's decref does."""

    def __init__(self, sent: list[bytes]) -> None:
        self.sent = sent
        self.cycle = self

    def __del__(self) -> None:
        self.sent.append(encode.dumps((None, "decref", ("7",), {})))
        if len(self.sent) < 50:
            _SendsOnCollection(self.sent)  # garbage for the next collection


def test_a_finalizer_that_encodes_during_an_encode_leaves_both_whole() -> None:
    """A garbage collection in the middle of a ``dumps`` (the tuples' tags allocate)
    runs a finalizer that encodes on the same thread: each message comes out whole.
    (It took the first part of the outer message: a server got a ``submit`` whose
    blob began at its arguments.)"""
    message: Any = ("18", "submit", (1, [(i, "m:f", b"x", {}) for i in range(200)]), {})
    sent: list[bytes] = []
    old = gc.get_threshold()
    gc.collect()
    try:
        _SendsOnCollection(sent)
        gc.set_threshold(1)
        data = encode.dumps(message)
        during = len(sent)
    finally:
        gc.set_threshold(*old)
    gc.collect()
    assert during, "no finalizer ran during the encode"
    assert decode.loads(data) == message
    assert all(decode.loads(one) == (None, "decref", ("7",), {}) for one in sent)
