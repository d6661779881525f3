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

**One state machine.**  :class:`Handshake` is either side of the handshake,
without I/O (sans-IO, as h11 is for HTTP): it is fed the peer's frames and
returns the frames to send, and once both sides are through, its
:class:`Agreement` says what follows.  The server's connections, the blocking
clients and the asyncio client all drive this one machine; only how they move
bytes differs.  A frame is at most :data:`~.framing.HANDSHAKE_MAX_FRAME`
bytes; the drivers' framing checks that before anything is allocated.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import AuthenticationError, ProtocolError, TLSError

__all__ = [
    "CHALLENGE",
    "FAILURE",
    "FLAG_LOCAL",
    "FLAG_PICKLE",
    "NATIVE_VERSION",
    "TLS_HANDSHAKE_RECORD",
    "TLS_REQUIRED",
    "WELCOME",
    "Agreement",
    "Handshake",
    "Step",
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

#: The first byte of a TLS handshake record, which starts every ``ClientHello``:
#: never the first byte of a handshake frame, whose length is far smaller.
TLS_HANDSHAKE_RECORD = 0x16
#: What a TLS server sends a plain peer, in the clear, as the frame where its
#: challenge would be (see :mod:`distproc.tls`).
TLS_REQUIRED = (
    b"this distproc server requires TLS; connect with a distproc client given "
    b"--tls-cert, --tls-key and --tls-ca (or tls=distproc.TLSConfig(...)); "
    b"a multiprocessing.managers client cannot speak TLS"
)


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


@dataclass(frozen=True)
class Agreement:
    """What both sides of a finished handshake said about what follows it."""

    #: The peer's upgrade flags; ``None``: the peer is not distproc (a stdlib peer).
    peer_flags: int | None
    #: Both sides are distproc: the native protocol follows.
    native: bool
    #: Both sides allow pickle on the native protocol (else the native codec).
    pickle: bool
    #: Both sides asked to move to the server's same-host socket.
    same_host: bool


class Step(NamedTuple):
    """What one frame of the peer's made this side do."""

    #: Frames to write, in order (also when the handshake failed: ``#FAILURE#``).
    send: list[bytes]
    #: The handshake failed: write ``send``, then close.
    error: ProtocolError | AuthenticationError | None = None


# The states: what the machine waits for next.
_CHALLENGE, _RESPONSE, _VERDICT, _DONE, _FAILED = range(5)


class Handshake:
    """One side of the handshake (see the module docstring), fed the peer's frames.

    The server delivers its challenge first (:meth:`start` returns it), then
    answers the client's; the client answers first, then delivers its own.
    ``marker`` is this side's upgrade marker (:func:`make_marker`), or empty
    for a peer that speaks only the stdlib's protocol.  A client whose first
    frame from the server is not a challenge, or anything else a server
    would not send, gets a :class:`~distproc.errors.ProtocolError`: the peer
    is no handshake partner at all, not one that holds another key.
    """

    __slots__ = ("_allow_md5", "_authkey", "_ours", "_server", "_state", "agreement", "our_flags")

    def __init__(
        self, authkey: bytes, *, server: bool, allow_md5: bool = True, marker: bytes = b""
    ) -> None:
        self._authkey = authkey
        self._server = server
        self._allow_md5 = allow_md5
        self._ours = make_challenge(marker=marker)
        #: This side's upgrade flags (``None``: no marker, a stdlib-protocol client).
        self.our_flags: int | None = marker[5] if marker else None
        self._state = _RESPONSE if server else _CHALLENGE
        #: What was agreed, once :attr:`done`.
        self.agreement: Agreement | None = None

    @property
    def done(self) -> bool:
        """Both sides proved the authkey; :attr:`agreement` is set."""
        return self._state == _DONE

    def start(self) -> list[bytes]:
        """The frames to send before anything is received: the server's challenge."""
        return [CHALLENGE + self._ours] if self._server else []

    def receive(self, frame: bytes) -> Step:
        """Take the peer's next frame; say what to send, and whether the handshake failed."""
        state = self._state
        try:
            if state == _CHALLENGE:
                return Step([self._answer(frame)])
            if state == _RESPONSE:
                return self._check_response(frame)
            if state == _VERDICT:
                return self._verdict(frame)
            raise ProtocolError("a frame after the handshake was over")
        except (AuthenticationError, ProtocolError) as exc:
            self._state = _FAILED
            return Step([], exc)

    def _answer(self, frame: bytes) -> bytes:
        if not frame.startswith(CHALLENGE):
            if self._server:
                raise AuthenticationError("protocol error: expected a challenge")
            if frame == TLS_REQUIRED:
                raise TLSError(TLS_REQUIRED.decode("ascii"))
            raise ProtocolError(f"it sent {_shown(frame)} where a challenge was due")
        message = frame[len(CHALLENGE) :]
        response = create_response(self._authkey, message, allow_md5=self._allow_md5)
        self._agree(read_marker(message))
        self._state = _VERDICT
        return response

    def _check_response(self, frame: bytes) -> Step:
        try:
            verify_response(self._authkey, self._ours, frame, allow_md5=self._allow_md5)
        except AuthenticationError as exc:
            self._state = _FAILED
            return Step([FAILURE], exc)
        if self._server:
            self._state = _CHALLENGE
        else:
            self._state = _DONE
        return Step([WELCOME])

    def _verdict(self, frame: bytes) -> Step:
        if frame != WELCOME:
            if self._server:
                raise AuthenticationError("the client rejected the server's digest")
            raise AuthenticationError("digest sent was rejected")
        if self._server:
            self._state = _DONE
            return Step([])
        self._state = _RESPONSE
        return Step([CHALLENGE + self._ours])

    def _agree(self, peer_flags: int | None) -> None:
        ours = self.our_flags
        both = ours is not None and peer_flags is not None
        shared = (ours or 0) & (peer_flags or 0) if both else 0
        self.agreement = Agreement(
            peer_flags=peer_flags,
            native=both,
            pickle=bool(shared & FLAG_PICKLE),
            same_host=bool(shared & FLAG_LOCAL),
        )


def _shown(frame: bytes) -> str:
    """A peer's unexpected frame, short enough for a message."""
    return repr(frame[:24]) + ("..." if len(frame) > 24 else "")
