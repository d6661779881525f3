"""The wire: framing, the authkey handshake, codecs and message shapes."""

from .codecs import Codec, PickleCodec, XmlrpcCodec, get_codec
from .framing import DEFAULT_MAX_FRAME, HANDSHAKE_MAX_FRAME, FrameDecoder
from .messages import Token

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HANDSHAKE_MAX_FRAME",
    "Codec",
    "FrameDecoder",
    "PickleCodec",
    "Token",
    "XmlrpcCodec",
    "get_codec",
]
