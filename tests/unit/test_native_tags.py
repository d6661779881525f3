"""The native codec's tag check (distproc.wire.native.tags): no ext tag ever leaves ``loads``.

The codec's promise that it builds only plain values rests on this check: a
tag that msgpack's hooks did not replace (a stray ext value, an ext value as a
map key) must be found and refused, however deep it hides, and the check must
stay cheap and free of false alarms for every clean value.
"""

from __future__ import annotations

import gc
from typing import Any

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type stubs
import pytest

from distproc.errors import ProtocolError
from distproc.wire.native import NativeCodec, tags

CODEC = NativeCodec()


def stray() -> tags.Tag:
    """A tag as the decoder makes one (for any type but the tuple)."""
    return tags.Tag((None, tags.LIVE))


def raw(obj: Any) -> bytes:
    """Hand-made msgpack (what a peer could send), packed without the codec."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def test_a_clean_value_passes() -> None:
    value = CODEC.loads(CODEC.dumps([1, (2, {3: frozenset({4})}), {"k": {5, 6}}]))
    tags.check(value)  # no alarm for what the decoder built whole


@pytest.mark.parametrize(
    "hidden",
    [
        lambda t: [t],
        lambda t: {"key": t},
        lambda t: {t: "value"},
        lambda t: (1, (2, t)),
        lambda t: {frozenset({1}), t},
        lambda t: frozenset({t}),
        lambda t: ValueError("message", t),
        lambda t: [{"a": [{"b": (t,)}]}],
    ],
    ids=["list", "dict value", "dict key", "tuple", "set", "frozenset", "exception", "nested"],
)
def test_a_tag_left_anywhere_is_found(hidden: Any) -> None:
    for tag in (stray(), tags.TUPLE_DECODED):
        value = hidden(tag)
        assert tags.has_tag(value)
        with pytest.raises(ProtocolError, match="ext tag outside the head of an array"):
            tags.check(value)


def nested(depth: int, bottom: Any) -> list[Any]:
    value: list[Any] = [bottom]
    for _ in range(depth):
        value = [value]
    return value


def test_a_deeply_nested_tag_from_the_wire_is_refused() -> None:
    """As deep as msgpack decodes (1023 levels): found, and a ProtocolError, never
    a RecursionError of the search nor a tag let through."""
    for depth in (10, 400, 1020):
        payload = raw(nested(depth, [1, msgpack.ExtType(tags.TUPLE, b"")]))
        with pytest.raises(ProtocolError, match="ext tag"):
            CODEC.loads(payload)
    assert tags.has_tag(nested(5000, stray()))  # no depth where the search gives up


def test_refuse_tags_guards_the_fields_of_a_tagged_array() -> None:
    tags.refuse_tags(["plain", 1, (2, 3)])
    tags.refuse_tags("a string is no container")
    with pytest.raises(ValueError, match="ext tag outside the head of an array"):
        tags.refuse_tags([1, {"x": stray()}])


@pytest.mark.parametrize(
    "payload",
    [
        raw({msgpack.ExtType(tags.TUPLE, b""): 1}),  # a tuple tag as a map key
        raw({"k": msgpack.ExtType(tags.SET, b"")}),  # a set tag alone as a value
        raw([1, 2, msgpack.ExtType(tags.TUPLE, b"")]),  # a tag after an array's head
    ],
    ids=["tuple tag as key", "set tag as value", "tag after the head"],
)
def test_stray_tags_from_the_wire_are_refused(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match="ext tag"):
        CODEC.loads(payload)
    # The refusal leaves nothing behind: the next clean value raises no alarm.
    tags.check(CODEC.loads(CODEC.dumps((1, [2]))))


def test_a_failed_decode_keeps_no_tag_alive() -> None:
    """A decoder that raises mid-array drops its traceback, whose frames would hold tags."""
    refs = [tags.LIVE, tags.TUPLE_DECODED]
    before = [len(gc.get_referrers(obj)) for obj in refs]
    for _ in range(100):
        with pytest.raises(ProtocolError):
            CODEC.loads(raw([msgpack.ExtType(tags.DATE, b""), "not", "ints", 1]))
    after = [len(gc.get_referrers(obj)) for obj in refs]
    assert after == before
