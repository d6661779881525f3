"""The authkey handshake: a mutual HMAC challenge, as the stdlib does it.

Six raw frames (nothing is unpickled until both are through):

====  =========  ===============================================================
step  direction  frame
====  =========  ===============================================================
1     S → C      ``#CHALLENGE#`` + M, M = ``{sha256}`` + 40 random bytes
2     C → S      ``{digest}`` + HMAC(authkey, M)  (or 16 raw bytes of HMAC-MD5)
3     S → C      ``#WELCOME#`` or ``#FAILURE#``
4-6   C ↔ S      the same three steps with the roles swapped
====  =========  ===============================================================

Two forms exist.  CPython 3.11 and older challenge with 20 random bytes and
answer with a raw 16-byte HMAC-MD5; 3.12+ prefix the challenge with the digest
name and answer with ``{name}`` + HMAC over the *whole* challenge (prefix
included).  A legacy peer answers a prefixed challenge with raw MD5 of all of
it, which a verifier recognises by its length.  distproc challenges with
sha256, accepts MD5 answers from legacy peers unless ``allow_md5=False``, and
compares digests with :func:`hmac.compare_digest`.

**Upgrade marker.**  A distproc peer starts the random part of its challenge
with a marker: ``MAGIC`` (4 bytes), the native protocol version (1 byte) and
flags (1 byte; bit 0: this side allows pickle; bit 1: this side would move to
a same-host socket, see :mod:`.same_host`), followed by 34 random bytes.
Stdlib peers see random bytes and answer as usual.  Each side learns from the
other's challenge whether it speaks distproc's native protocol, and the marker
is authenticated: the peer's HMAC covers the whole challenge.
"""

from __future__ import annotations

import hmac
import os
from typing import Protocol

from ..errors import AuthenticationError

__all__ = [
    "CHALLENGE",
    "FAILURE",
    "FLAG_LOCAL",
    "FLAG_PICKLE",
    "WELCOME",
    "ByteChannel",
    "client_handshake",
    "create_response",
    "make_challenge",
    "make_marker",
    "read_marker",
    "verify_response",
]

CHALLENGE = b"#CHALLENGE#"
WELCOME = b"#WELCOME#"
FAILURE = b"#FAILURE#"
LEGACY_CHALLENGE_SIZE = 20
NONCE_SIZE = 40
ALLOWED_DIGESTS = frozenset({b"md5", b"sha256", b"sha384", b"sha3_256", b"sha3_384"})
_LEGACY_LENGTHS = (16, 20)
MAGIC = b"\xd1\x57dp"
NATIVE_VERSION = 1
FLAG_PICKLE = 0x01
FLAG_LOCAL = 0x02
_MAX_DIGEST_NAME = max(len(d) for d in ALLOWED_DIGESTS)


class ByteChannel(Protocol):
    """What a handshake needs from a connection: raw frames in and out."""

    def send_bytes(self, data: bytes) -> None: ...

    def recv_bytes(self, maxlength: int | None = None) -> bytes: ...


def make_marker(flags: int) -> bytes:
    """The upgrade marker that starts a distproc peer's challenge nonce."""
    return MAGIC + bytes((NATIVE_VERSION, flags))


def make_challenge(digest: str = "sha256", marker: bytes = b"") -> bytes:
    """The message M to send after ``#CHALLENGE#`` (prefixed form)."""
    return b"{" + digest.encode("ascii") + b"}" + marker + os.urandom(NONCE_SIZE - len(marker))


def read_marker(message: bytes) -> int | None:
    """The flags of a distproc peer's challenge M, or ``None`` for any other peer."""
    close = message.find(b"}", 1, _MAX_DIGEST_NAME + 2) if message.startswith(b"{") else -1
    nonce = message[close + 1 :] if close > 0 else b""
    if len(nonce) >= 6 and nonce.startswith(MAGIC) and nonce[4] == NATIVE_VERSION:
        return nonce[5]
    return None


def _split_digest(message: bytes) -> tuple[str, bytes]:
    """``('', message)`` for the legacy unprefixed form, else ``(name, rest)``."""
    if len(message) in _LEGACY_LENGTHS:
        return "", message
    if message.startswith(b"{"):
        close = message.find(b"}", 1, _MAX_DIGEST_NAME + 2)
        if close > 0 and message[1:close] in ALLOWED_DIGESTS:
            return message[1:close].decode("ascii"), message[close + 1 :]
    raise AuthenticationError(
        "unsupported handshake message: wrong length, no digest prefix, or a digest "
        "that is not allowed"
    )


def create_response(authkey: bytes, message: bytes, *, allow_md5: bool = True) -> bytes:
    """Answer challenge M (without the ``#CHALLENGE#`` prefix)."""
    if len(message) < LEGACY_CHALLENGE_SIZE:
        raise AuthenticationError(f"challenge too short: {len(message)} bytes")
    name, _ = _split_digest(message)
    if not name:
        if not allow_md5:
            raise AuthenticationError("the peer asked for HMAC-MD5, which allow_md5=False refuses")
        return hmac.new(authkey, message, "md5").digest()
    if name == "md5" and not allow_md5:
        raise AuthenticationError("the peer asked for HMAC-MD5, which allow_md5=False refuses")
    return b"{" + name.encode("ascii") + b"}" + hmac.new(authkey, message, name).digest()


def verify_response(
    authkey: bytes, message: bytes, response: bytes, *, allow_md5: bool = True
) -> None:
    """Raise :class:`AuthenticationError` unless ``response`` answers ``message``."""
    name, mac = _split_digest(response)
    name = name or "md5"
    if name == "md5" and not allow_md5:
        raise AuthenticationError("the peer answered with HMAC-MD5, which allow_md5=False refuses")
    expected = hmac.new(authkey, message, name).digest()
    if len(expected) != len(mac) or not hmac.compare_digest(expected, mac):
        raise AuthenticationError("digest received was wrong")


def deliver_challenge(
    conn: ByteChannel, authkey: bytes, *, allow_md5: bool = True, marker: bytes = b""
) -> None:
    """Challenge the peer; raise :class:`AuthenticationError` if it fails."""
    message = make_challenge(marker=marker)
    conn.send_bytes(CHALLENGE + message)
    response = conn.recv_bytes(256)
    try:
        verify_response(authkey, message, response, allow_md5=allow_md5)
    except AuthenticationError:
        conn.send_bytes(FAILURE)
        raise
    conn.send_bytes(WELCOME)


def answer_challenge(conn: ByteChannel, authkey: bytes, *, allow_md5: bool = True) -> int | None:
    """Answer the peer's challenge; return the peer's upgrade flags (``None``: no marker)."""
    message = conn.recv_bytes(256)
    if not message.startswith(CHALLENGE):
        raise AuthenticationError("protocol error: expected a challenge")
    message = message[len(CHALLENGE) :]
    conn.send_bytes(create_response(authkey, message, allow_md5=allow_md5))
    if conn.recv_bytes(256) != WELCOME:
        raise AuthenticationError("digest sent was rejected")
    return read_marker(message)


def client_handshake(
    conn: ByteChannel, authkey: bytes, *, allow_md5: bool = True, marker: bytes = b""
) -> int | None:
    """The client's half: answer the server's challenge, then challenge it.

    Returns the server's upgrade flags, or ``None`` when the server is not distproc.
    """
    flags = answer_challenge(conn, authkey, allow_md5=allow_md5)
    deliver_challenge(conn, authkey, allow_md5=allow_md5, marker=marker)
    return flags
