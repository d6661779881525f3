"""The wire: framing, the authkey handshake, codecs and message shapes."""

from .codecs import Codec, PickleCodec, XmlrpcCodec
from .framing import DEFAULT_MAX_FRAME, HANDSHAKE_MAX_FRAME, FrameDecoder
from .messages import Token
from .serializers import SERIALIZERS, get_codec

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HANDSHAKE_MAX_FRAME",
    "SERIALIZERS",
    "Codec",
    "FrameDecoder",
    "PickleCodec",
    "Token",
    "XmlrpcCodec",
    "get_codec",
]
