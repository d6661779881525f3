"""Framing: the stdlib's length-prefixed messages.

Every message on a ``multiprocessing.connection`` socket is one frame:

=========  =====================  ==========================================
field      encoding               meaning
=========  =====================  ==========================================
length     ``!i`` (4 bytes)       payload size, signed big-endian
length64   ``!Q`` (8 bytes)       only when ``length == -1``: the real size
payload    ``length`` bytes       handshake bytes or an encoded message
=========  =====================  ==========================================

distproc writes a frame with one ``sendmsg`` call (header and payload together)
on a socket with ``TCP_NODELAY`` set, so a message never waits for the delayed
ACK of its own header.  The stdlib writes header and payload separately above
16 KiB and leaves Nagle on, so each such message waits for that delayed ACK.

The receiving side checks the declared length against a limit *before*
allocating anything: 256 bytes during the handshake, a configurable maximum
(64 MiB by default) afterwards.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading

from ..errors import ConnectionLostError, FrameTooLargeError, ProtocolError
from .codecs import BytesLike

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HANDSHAKE_MAX_FRAME",
    "IOV_MAX",
    "JOIN_LIMIT",
    "FrameDecoder",
    "FrameReader",
    "drop_sent",
    "encode_header",
    "frame_views",
    "recv_frame",
    "send_frame",
    "send_frame_parts",
    "send_views",
]

HEADER = struct.Struct("!i")
HEADER64 = struct.Struct("!Q")
#: Largest frame accepted after the handshake unless configured otherwise.
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
#: Largest frame accepted while authenticating (the stdlib's own limit).
HANDSHAKE_MAX_FRAME = 256
_MAX_SHORT = 0x7FFFFFFF


def encode_header(size: int) -> bytes:
    """The length prefix for a payload of ``size`` bytes."""
    if size > _MAX_SHORT:
        return HEADER.pack(-1) + HEADER64.pack(size)
    return HEADER.pack(size)


def _too_large(size: int, limit: int) -> FrameTooLargeError:
    return FrameTooLargeError(f"bad message length: {size} bytes declared, limit {limit}")


def _parse_header(buf: bytearray, pos: int, end: int, limit: int) -> tuple[int, int] | None:
    """``(payload size, payload start)`` of the frame at ``pos``, or ``None`` if incomplete.

    Raises before anything is allocated when the declared size is over ``limit``.
    """
    if end - pos < 4:
        return None
    (size,) = HEADER.unpack_from(buf, pos)
    if size == -1:
        if end - pos < 12:
            return None
        (size,) = HEADER64.unpack_from(buf, pos + 4)
        start = pos + 12
    elif size < 0:
        raise ProtocolError(f"bad message length: negative size {size}")
    else:
        start = pos + 4
    if size > limit:
        raise _too_large(size, limit)
    return size, start


class FrameDecoder:
    """Incremental (sans-IO) frame parser with a size limit.

    ``append()`` buffers whatever bytes arrived; ``next_frame()`` returns the
    next whole frame or ``None``.  Frames are handed out one at a time so the
    caller can change ``max_size`` between them (the handshake's 256 bytes,
    then the real limit).  A declared length over ``max_size`` raises
    :class:`FrameTooLargeError` before any buffer for it is allocated.
    """

    __slots__ = ("_buf", "_pos", "max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._pos = 0

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a whole frame."""
        return len(self._buf) - self._pos

    def append(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def next_frame(self) -> bytes | None:
        buf, pos = self._buf, self._pos
        header = _parse_header(buf, pos, len(buf), self.max_size)
        if header is None:
            return None
        size, start = header
        end = start + size
        if end > len(buf):
            return None
        frame = bytes(buf[start:end])
        self._pos = end
        if end > 65536 and end * 2 > len(buf):
            del buf[:end]
            self._pos = 0
        return frame

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Append ``data`` and return every whole frame now buffered."""
        self.append(data)
        frames = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames


class _SpareBuffers:
    """Large receive buffers, kept for the next large frame of this process.

    A frame over ``FrameReader.BIG`` bytes is received into a buffer of its own.
    A fresh one costs a page fault per 4 KiB as it fills, and glibc hands
    freed megabytes back to the kernel, so a process that receives one 1 MiB
    frame after another would pay for 256 faults each time, more than the copy
    itself.  So the last buffers up to ``KEEP`` bytes are kept and lent out
    again once nothing refers to them.
    """

    KEEP = 8 * 1024 * 1024
    COUNT = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffers: list[bytearray] = []

    def take(self, size: int) -> bytearray | None:
        """A kept buffer of at least ``size`` bytes that nothing else uses, if there is one."""
        with self._lock:
            for buf in self._buffers:
                # Free when only the list, this name and getrefcount's argument
                # refer to it: no frame or memoryview of an earlier loan is alive.
                if len(buf) >= size and sys.getrefcount(buf) <= 3:
                    return buf
        return None

    def keep(self, buf: bytearray) -> None:
        """Keep ``buf`` (filled, and about to be handed out) for a later frame."""
        if len(buf) > self.KEEP:
            return
        with self._lock:
            buffers = self._buffers
            if any(b is buf for b in buffers):
                return
            buffers.append(buf)
            if len(buffers) > self.COUNT:
                buffers.pop(0)


_spares = _SpareBuffers()


class FrameReader:
    """Frames read *into* buffers this reader owns (``recv_into``, ``BufferedProtocol``).

    ``get_buffer()`` returns where the next bytes should go and
    ``buffer_updated(n)`` says how many arrived; ``next_frame()`` then returns
    whole frames.  Small frames share a rolling buffer (many per read);
    a frame over ``BIG`` bytes gets a buffer of its own once its header is
    in, so its payload is received in place.  The length limit is checked on
    the header, before that buffer exists, and the buffer grows as the bytes
    arrive (at most twice what came so far, and ``GROW`` at first): a length
    prefix alone buys no memory.  A spare buffer kept from an earlier frame
    that is large enough is used whole at once.
    """

    BIG = 64 * 1024
    #: The rolling buffer starts this small (an idle connection costs little) and
    #: doubles up to ``MAX_CHUNK`` while reads fill it, shrinking back once drained.
    CHUNK = 4 * 1024
    MAX_CHUNK = 256 * 1024
    #: A large frame's own buffer starts at this size and doubles as it fills.
    GROW = 1024 * 1024

    __slots__ = ("_big", "_big_pos", "_big_size", "_buf", "_end", "_start", "max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME) -> None:
        self.max_size = max_size
        self._buf = bytearray(self.CHUNK)
        self._start = 0
        self._end = 0
        #: The large frame being received: its buffer (maybe not yet its full
        #: size), the bytes in it, and the frame's declared size.
        self._big: bytearray | None = None
        self._big_pos = 0
        self._big_size = 0

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        big = self._big
        if big is not None:
            if self._big_pos == len(big):
                big = self._grow(big)
            return memoryview(big)[self._big_pos : self._big_size]
        buf = self._buf
        if self._end == len(buf):
            if self._start:
                data = buf[self._start : self._end]
                buf[: len(data)] = data
                self._start, self._end = 0, len(data)
            else:
                buf.extend(bytes(min(len(buf), self.MAX_CHUNK)))
        elif self._end == 0 and len(buf) > self.CHUNK:
            buf = self._buf = bytearray(self.CHUNK)  # drained after a burst: give it back
        return memoryview(buf)[self._end :]

    def _grow(self, big: bytearray) -> bytearray:
        """A larger buffer for the large frame, with what came so far (called with no
        view of the old one alive: the previous ``get_buffer``'s was released)."""
        size = min(self._big_size, max(2 * len(big), self.GROW))
        grown = bytearray(size)
        grown[: self._big_pos] = memoryview(big)[: self._big_pos]
        self._big = grown
        return grown

    def missing(self) -> int:
        """Bytes still to come of the large frame being received (0: none is)."""
        return 0 if self._big is None else self._big_size - self._big_pos

    def buffer_updated(self, nbytes: int) -> None:
        if self._big is not None:
            self._big_pos += nbytes
        else:
            self._end += nbytes

    def frames(self) -> list[bytes | memoryview]:
        """Every whole frame received so far, in order: ``next_frame()`` until ``None``.

        Short frames that lie whole in the rolling buffer are cut out in one
        loop (the usual case: a read brought a few small replies); anything
        else is left to :meth:`next_frame`.  Use it only where the limit does
        not change between frames (not during a handshake).
        """
        frames: list[bytes | memoryview] = []
        if self._big is None:
            buf, start, end, limit = self._buf, self._start, self._end, self.max_size
            view = memoryview(buf)
            while end - start >= 4:
                (size,) = HEADER.unpack_from(buf, start)
                if not 0 <= size <= end - start - 4 or size > limit:
                    break  # a long header, a partial frame or a bad one: see next_frame
                start += 4
                frames.append(bytes(view[start : start + size]))
                start += size
            view.release()
            if start == end:
                self._start = self._end = 0
                return frames
            self._start = start
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def next_frame(self) -> bytes | memoryview | None:
        big = self._big
        if big is not None:
            if self._big_pos < self._big_size:
                return None
            self._big = None
            _spares.keep(big)
            return memoryview(big)[: self._big_size]
        buf, end = self._buf, self._end
        header = _parse_header(buf, self._start, end, self.max_size)
        if header is None:
            return None
        size, start = header
        have = end - start
        if have >= size:
            frame = bytes(memoryview(buf)[start : start + size])
            self._start = start + size
            if self._start == end:
                self._start = self._end = 0
            return frame
        if size > self.BIG:
            big = _spares.take(size) or bytearray(min(size, max(2 * have, self.GROW)))
            big[:have] = memoryview(buf)[start:end]
            self._big, self._big_pos, self._big_size = big, have, size
            self._start = self._end = 0
            return self.next_frame()
        return None


#: Frames up to this size are joined and written with one ``sendall``.
JOIN_LIMIT = 64 * 1024
#: In a larger frame, runs of parts smaller than this are joined; larger parts
#: are sent from where they are, never copied.
SMALL_PART = 16 * 1024


def _iov_max() -> int:
    try:
        value = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        value = -1
    return value if value > 0 else 16  # POSIX's minimum


#: The most buffers one ``sendmsg`` takes (1024 on Linux): past it, EMSGSIZE.
IOV_MAX = _iov_max()


def frame_views(header: bytes, parts: list[BytesLike]) -> list[memoryview]:
    """``header`` and ``parts`` as byte views for ``sendmsg``: each large part a
    view of its own (no copy), each run of small ones joined into one buffer (a
    batch of many records would otherwise need more buffers than a call takes).
    Empty parts are left out."""
    views: list[memoryview] = []
    run: list[BytesLike] = [header]
    for part in parts:
        size = len(part)
        if size >= SMALL_PART:
            if run:
                views.append(memoryview(b"".join(run)))
                run = []
            views.append(memoryview(part).cast("B"))
        elif size:
            run.append(part)
    if run:
        views.append(memoryview(b"".join(run)))
    return views


def drop_sent(views: list[memoryview], sent: int) -> None:
    """Remove from the front of ``views`` the ``sent`` bytes that ``sendmsg`` took."""
    done = 0
    while done < len(views) and sent >= len(views[done]):
        sent -= len(views[done])
        done += 1
    del views[:done]
    if views and sent:
        views[0] = views[0][sent:]


def send_views(sock: socket.socket, views: list[memoryview]) -> None:
    """Write all of ``views`` on a blocking socket, at most ``IOV_MAX`` per call."""
    while views:
        drop_sent(views, sock.sendmsg(views[:IOV_MAX]))


def send_frame_parts(sock: socket.socket, parts: list[BytesLike]) -> None:
    """Write one frame made of ``parts`` on a blocking socket, in as few system
    calls as the kernel allows; a large part is never copied."""
    size = sum(map(len, parts))
    header = encode_header(size)
    if size <= JOIN_LIMIT:
        sock.sendall(b"".join([header, *parts]))
        return
    send_views(sock, frame_views(header, parts))


def send_frame(sock: socket.socket, payload: BytesLike) -> None:
    """Write one frame with as few system calls as the kernel allows (one, usually)."""
    send_frame_parts(sock, [payload])


def _recv_exact(sock: socket.socket, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            if got == 0:
                raise EOFError
            raise ConnectionLostError("connection closed in the middle of a frame")
        got += n
    return buf


def recv_frame(sock: socket.socket, max_size: int = DEFAULT_MAX_FRAME) -> bytes:
    """Read one whole frame from a blocking socket; ``EOFError`` at a clean end."""
    (size,) = HEADER.unpack(_recv_exact(sock, 4))
    if size == -1:
        (size,) = HEADER64.unpack(_recv_exact(sock, 8))
    elif size < 0:
        raise ProtocolError(f"bad message length: negative size {size}")
    if size > max_size:
        raise _too_large(size, max_size)
    if size == 0:
        return b""
    try:
        return bytes(_recv_exact(sock, size))
    except EOFError:
        raise ConnectionLostError("connection closed in the middle of a frame") from None
