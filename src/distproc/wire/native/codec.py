"""The ``'native'`` codec itself: :class:`NativeCodec` (see the package's docstring)."""

from __future__ import annotations

from typing import Any

from ..codecs import BytesLike, Codec
from . import registry as _registry  # noqa: F401  (distproc's types, registered at import)
from .decode import loads
from .encode import dumps

__all__ = ["NativeCodec"]


class NativeCodec(Codec):
    """msgpack-based codec that never unpickles (see :mod:`distproc.wire.native`).

    Thread-safe: each thread packs with its own cached ``msgpack.Packer``,
    shared by all instances (they are configured identically).
    """

    name = "native"

    def __init__(self, *, max_items: int | None = None) -> None:
        #: The values one payload may decode to (see :mod:`.decode`; ``None``: no
        #: bound but the payload's size).  A server sets its ``max_decoded_items``.
        self.max_items = max_items

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj``; :class:`TypeError` names any value that cannot travel."""
        return dumps(obj)

    def loads(self, data: BytesLike) -> Any:
        """Decode ``data``; :class:`~distproc.errors.ProtocolError` if it is malformed."""
        return loads(data, self.max_items)


loads(dumps(((), {frozenset()})))  # the tag check's baseline: see .tags
