"""Codecs by serializer name: what ``serializer='...'`` of a manager or client means.

``'pickle'`` and ``'xmlrpclib'`` are the stdlib's (:mod:`.codecs`); ``'native'``
is distproc's msgpack codec (:mod:`.native`), imported on first use so that a
program that never asks for it never loads msgpack.
"""

from __future__ import annotations

from collections.abc import Callable

from .codecs import Codec, PickleCodec, XmlrpcCodec

__all__ = ["SERIALIZERS", "get_codec"]

#: Every serializer name a manager, a proxy or a client takes.
SERIALIZERS = ("pickle", "xmlrpclib", "native")

_STDLIB: dict[str, Callable[[], Codec]] = {"pickle": PickleCodec, "xmlrpclib": XmlrpcCodec}


def get_codec(serializer: str) -> Codec:
    """The codec for a serializer name: ``'pickle'``, ``'xmlrpclib'`` or ``'native'``."""
    if serializer == "native":
        from .native import NativeCodec

        return NativeCodec()
    try:
        return _STDLIB[serializer]()
    except KeyError:
        raise ValueError(
            f"unknown serializer {serializer!r}: expected one of {sorted(SERIALIZERS)}"
        ) from None
