"""A raw client of distproc's native protocol, for fault tests that send what no
distproc client would: reused request ids, ids of the wrong type, huge payloads.

The handshake is :class:`~._wire.WireClient`'s, with distproc's upgrade marker in
the client's challenge; records are built with :mod:`distproc.wire.records`.
"""

from __future__ import annotations

import os
from typing import Any

from shared_fixtures import Address

from distproc.wire.codecs import PickleCodec
from distproc.wire.handshake import FLAG_PICKLE, make_marker
from distproc.wire.native import NativeCodec
from distproc.wire.records import CALL, CANCEL, HELLO, KINDS, iter_records, record

from ._wire import WireClient, frame

__all__ = ["NativeWire", "call_record", "cancel_record"]


def call_record(rid: int, blob: bytes, *, tid: int = 1, noreply: bool = False) -> bytes:
    """One ``CALL`` record whose blob is ``blob`` (an encoded ``(ident, method, args, kwds)``)."""
    return b"".join(record(CALL, rid, tid, 1 if noreply else 0, blob))


def cancel_record(rid: int) -> bytes:
    return b"".join(record(CANCEL, rid))


class NativeWire(WireClient):
    """One native-protocol connection, spoken to record by record."""

    def __init__(
        self,
        address: Address,
        authkey: bytes,
        *,
        pickle: bool = False,
        session_id: bytes | None = None,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(address, timeout=timeout)
        self.codec: Any = PickleCodec() if pickle else NativeCodec()
        self.answer_challenge(authkey)
        sid = os.urandom(16) if session_id is None else session_id
        hello = b"".join(record(HELLO, 0, blob=sid))
        marker = make_marker(FLAG_PICKLE if pickle else 0)
        self.deliver_challenge(authkey, then=frame(hello), marker=marker)

    def encode(self, ident: Any, method: str, args: Any = (), kwds: Any = None) -> bytes:
        return bytes(self.codec.dumps((ident, method, args, {} if kwds is None else kwds)))

    def send_records(self, *records: bytes) -> None:
        """Send ``records`` in one frame."""
        self.send_frame(b"".join(records))

    def send_call(
        self, rid: int, ident: Any, method: str, args: Any = (), kwds: Any = None
    ) -> None:
        self.send_records(call_record(rid, self.encode(ident, method, args, kwds)))

    def replies(self, count: int) -> dict[int, tuple[str, Any]]:
        """Read until ``count`` replies came: ``{rid: (kind, value)}``."""
        got: dict[int, tuple[str, Any]] = {}
        while len(got) < count:
            for _op, rid, _tid, aux, blob in iter_records(self.recv_frame()):
                got[rid] = (KINDS[aux], self.codec.loads(blob))
        return got

    def __enter__(self) -> NativeWire:
        return self

    def call(self, ident: Any, method: str, args: Any = (), kwds: Any = None) -> Any:
        """One call and its reply; fail the test unless it is ``#RETURN``."""
        rid = int.from_bytes(os.urandom(4), "big") | 1 << 40
        self.send_call(rid, ident, method, args, kwds)
        kind, value = self.replies(1)[rid]
        if kind != "#RETURN":
            raise AssertionError(f"{method}{args!r} -> {kind}: {value}")
        return value
