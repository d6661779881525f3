"""The native protocol, client side: one multiplexed connection per process.

Every proxy and every thread of a process that talks to one distproc server
shares one :class:`Multiplexer` (:mod:`.mux_cache` keeps them, :mod:`.connect`
opens them).  Calls carry request ids, so many are in flight at once; replies
are matched by id.  There is no reader thread: the first thread that waits
for a reply reads the socket (the *leader*) and hands the replies it reads to
their callers; the others sleep, each on a lock of its own.  A single-threaded
client therefore never pays for a thread switch.

A call interrupted while it waits (Ctrl-C) sends ``CANCEL``: the server drops
the pending call (a ``get()`` that has not been served yet takes nothing), and
a late reply is recognised by its id and discarded.  ``noreply`` calls return
once written; if one fails, its error is raised by the next call of the same
thread (see :mod:`distproc.server.native_session` for the messages).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import socket
import threading
from _thread import allocate_lock as _allocate_lock
from collections.abc import Callable, Sequence
from typing import Any

from ..callcontext import context
from ..errors import ConnectionLostError, DistprocError, ProtocolError
from ..spinning import recv_into_spinning, spin_seconds
from ..wire.codecs import BytesLike, Codec
from ..wire.framing import DEFAULT_MAX_FRAME, JOIN_LIMIT, FrameReader, send_frame_parts
from ..wire.messages import KIND_RETURN
from ..wire.records import (
    BATCH_LIMIT,
    CALL,
    CANCEL,
    DEFERRED,
    FRAMED_RECORD,
    KINDS,
    NOREPLY,
    RECORD,
    REPLY,
    iter_records,
    only_record,
    record,
    record_parts,
)
from .connection import convert_to_error

__all__ = ["DEFER_LIMIT", "DRAIN_EVERY", "PILE_LIMIT", "Multiplexer"]

_WAITALL = getattr(socket, "MSG_WAITALL", 0)
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
#: ``noreply`` calls larger than this wait for their reply all the same.
DEFER_LIMIT = 64 * 1024
#: Calls up to this size may go out in a frame of their own, joined in memory.
_ALONE_LIMIT = JOIN_LIMIT - FRAMED_RECORD.size
#: Past this many records left to the sending thread, a thread waits for the
#: socket instead of leaving its own: calls sent without waiting cannot pile up
#: in memory while the socket holds the sender up.
PILE_LIMIT = 256
#: A thread's ``noreply`` calls read what the server has sent (their errors)
#: once every this many, so that a thread making only such calls learns of a
#: failure soon, and the errors cannot fill the socket while nobody reads.
DRAIN_EVERY = 16


class _ReplySlot:
    """Where the reply to one call waits for the thread that made it."""

    __slots__ = ("blob", "done", "kind", "wake")

    def __init__(self) -> None:
        self.done = False
        self.kind = ""
        self.blob: Any = None
        #: Held while this slot's thread sleeps; the reader releases it to wake
        #: that thread alone (its reply came, or it is its turn to read).
        self.wake: Any = None


class Multiplexer:
    """A native-protocol connection shared by every thread of this process."""

    def __init__(
        self,
        sock: socket.socket,
        codec: Codec,
        address: Any,
        authkey: bytes,
        *,
        generation: int = 0,
        on_break: Callable[[Multiplexer], None] | None = None,
    ) -> None:
        self.sock = sock
        self.codec = codec
        self.address = address
        self.authkey = authkey
        #: The fork generation of the process that made it (see :mod:`.mux_cache`):
        #: in a forked child, this connection is the parent's.
        self.generation = generation
        self._on_break = on_break
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        #: Slots whose threads sleep while another thread reads the socket.
        self._sleeping: list[_ReplySlot] = []
        self._reading = False
        self._slots: dict[int, _ReplySlot] = {}
        self._rids = itertools.count(1)
        self._reader = FrameReader(DEFAULT_MAX_FRAME)
        #: Whether to poll before blocking for a reply (see :mod:`distproc.spinning`).
        self._spin = spin_seconds() > 0
        self._deferred: dict[int, list[BaseException]] = collections.defaultdict(list)
        #: Whole records (each a list of parts) left to the thread that is sending.
        self._later: collections.deque[list[BytesLike]] = collections.deque()
        #: The thread that holds ``_send_lock`` (it must never wait for it).
        self._sender: int | None = None
        #: ``noreply`` calls since the last :meth:`_drain` (approximate across threads).
        self._unread = 0
        self.broken: BaseException | None = None

    # ------------------------------------------------------------- sending
    def _take_later(self) -> list[BytesLike]:
        """With the send lock held: the next frame's worth of records from ``_later``
        (up to ``BATCH_LIMIT`` bytes, or one larger record: see :mod:`..wire.records`)."""
        parts: list[BytesLike] = []
        size = 0
        later = self._later
        while later:  # only the lock holder takes from the left: later[0] stays put
            record_size = sum(map(len, later[0]))
            if parts and size + record_size > BATCH_LIMIT:
                break
            parts += later.popleft()
            size += record_size
        return parts

    def _send(self, record: list[BytesLike] | None, *, wait: bool = True) -> None:
        """Send ``record`` (its parts), or leave it to the thread sending now.

        Threads rarely queue up on the socket: a thread that finds another one
        sending adds its record to ``_later`` and goes on, and the sender writes
        it too, batched with the others, before it stops (it looks again after
        it lets go of the lock, so nothing added meanwhile is left).  Only when
        more than ``PILE_LIMIT`` records wait does a thread wait for the lock
        (unless ``wait`` is false, or it is the sender itself, re-entered).
        """
        later = self._later
        if record:
            later.append(record)
        lock = self._send_lock
        while later:
            me = threading.get_ident()
            block = wait and len(later) > PILE_LIMIT and self._sender != me
            if not lock.acquire(blocking=block):
                return
            self._sender = me
            try:
                if self.broken is not None:
                    raise self._lost()
                batch = self._take_later()
                if batch:
                    try:
                        send_frame_parts(self.sock, batch)
                    except OSError as exc:
                        self._break(exc)
                        raise self._lost() from exc
            finally:
                self._sender = None
                lock.release()
        if self.broken is not None:
            raise self._lost()

    def _send_call(self, rid: int, tid: int, aux: int, blob: list[BytesLike], size: int) -> None:
        """Send one ``CALL`` record whose blob (``size`` bytes) is ``blob``.

        The common case, a small call while no other thread is sending, is
        written at once in a frame of its own; anything else goes through
        :meth:`_send`, which batches.
        """
        lock = self._send_lock
        if size <= _ALONE_LIMIT and not self._later and lock.acquire(blocking=False):
            self._sender = tid
            try:
                if self.broken is not None:
                    raise self._lost()
                header = FRAMED_RECORD.pack(RECORD.size + size, CALL, rid, tid, aux, size)
                try:
                    self.sock.sendall(b"".join([header, *blob]))
                except OSError as exc:
                    self._break(exc)
                    raise self._lost() from exc
            finally:
                self._sender = None
                lock.release()
            if self._later or self.broken is not None:
                self._send(None)  # what other threads left meanwhile; or the news
            return
        self._send(record_parts(CALL, rid, tid, aux, blob))

    def _encode_call(self, ident: Any, method: str, args: Any, kwds: Any) -> list[BytesLike]:
        return self.codec.dumps_parts((ident, method, tuple(args), kwds or {}))

    def send_later(self, ident: Any, method: str, args: tuple[Any, ...]) -> None:
        """Send a ``noreply`` call now, or leave it to the thread that is sending.

        Safe from finalizers: a garbage collection can run them in the middle of
        this very thread's send, so this never waits for the send lock.
        """
        try:
            blob = self._encode_call(ident, method, args, None)
        except Exception:
            return
        if self.broken is None:
            with contextlib.suppress(Exception):  # the next call finds the connection broken
                self._send(record_parts(CALL, next(self._rids), 0, NOREPLY, blob), wait=False)

    def raise_deferred(self) -> None:
        """Raise the error of an earlier ``noreply`` call of this thread, if one failed."""
        if not self._deferred:  # no noreply call of this connection ever failed
            return
        errors = self._deferred.get(threading.get_ident())
        if errors:
            raise errors.pop(0)

    def call_noreply(self, ident: Any, method: str, args: tuple[Any, ...], kwds: Any) -> Any:
        """Send a call without waiting for its reply (a large one still waits).

        Large calls wait, so their errors (a frame over the server's limit)
        surface at the call, and so a fast producer cannot queue up memory.
        """
        blob = self._encode_call(ident, method, args, kwds)
        size = sum(map(len, blob))
        if size > DEFER_LIMIT:
            kind, value = self._call_encoded(blob)
            if kind != KIND_RETURN:
                raise convert_to_error(kind, value)
            return value
        self._send_call(next(self._rids), threading.get_ident(), NOREPLY, blob, size)
        self._unread += 1
        if self._unread >= DRAIN_EVERY:
            self._unread = 0
            self._drain()
        return None

    def _drain(self) -> None:
        """Read, without waiting, whatever the server has sent, unless another
        thread is reading: the errors of ``noreply`` calls (raised by the
        thread's next call), or replies that other threads wait for."""
        if not _DONTWAIT:
            return  # no read that cannot block: the thread's next waiting call reads
        lock = self._lock
        with lock:
            if self._reading or self.broken is not None:
                return
            self._reading = True
        frames: list[BytesLike] = []
        try:
            reader = self._reader
            while True:
                try:
                    n = self.sock.recv_into(reader.get_buffer(), 0, _DONTWAIT)
                except BlockingIOError:
                    break
                if not n:
                    raise ConnectionLostError("the server closed the connection")
                reader.buffer_updated(n)
                frames += reader.frames()  # a large frame's rest waits for the next reader
        except BaseException as exc:
            self._stop_reading_after(exc)
            if isinstance(exc, Exception):
                return  # the next call finds the connection broken
            raise
        with lock:
            self._stop_reading(frames, None)

    def call(self, ident: Any, method: str, args: Any = (), kwds: Any = None) -> tuple[str, Any]:
        """Make one call and wait for its reply; return ``(kind, value)``."""
        return self._call_encoded(self._encode_call(ident, method, args, kwds))

    def _call_encoded(self, blob: list[BytesLike]) -> tuple[str, Any]:
        rid = next(self._rids)
        slot = _ReplySlot()
        with self._lock:
            if self.broken is not None:
                raise self._lost()
            self._slots[rid] = slot
        try:
            self._send_call(rid, threading.get_ident(), 0, blob, sum(map(len, blob)))
        except BaseException:
            with self._lock:
                self._slots.pop(rid, None)
            raise
        try:
            self._wait(slot)
        except BaseException:
            with self._lock:
                abandoned = self._slots.pop(rid, None) is not None
            if abandoned and self.broken is None:
                # Tell the server, so a get() that has not been served takes nothing.
                with contextlib.suppress(Exception):
                    self._send(list(record(CANCEL, rid)))
            raise
        return slot.kind, self.decode(slot.blob)

    def decode(self, blob: Any) -> Any:
        context.mux = self  # nested proxies adopt their references here
        try:
            return self.codec.loads(blob)
        finally:
            context.mux = None

    # ----------------------------------------------------------- receiving
    def _wait(self, slot: _ReplySlot) -> None:
        """Wait for ``slot``'s reply: read the socket, or sleep while another thread does.

        One thread reads at a time (the leader).  The others sleep on their own
        lock, and the leader wakes exactly the threads whose replies it read,
        and, when its own reply has come, one sleeper to lead in its place:
        no thread wakes only to sleep again.
        """
        lock = self._lock
        while True:
            with lock:
                if slot.done:
                    return
                if self.broken is not None:
                    raise self._lost()
                if self._reading:
                    wake = slot.wake = _allocate_lock()
                    wake.acquire()
                    self._sleeping.append(slot)
                else:
                    self._reading = True
                    wake = None
            if wake is not None:
                try:
                    wake.acquire()
                except BaseException:
                    self._leave(slot)
                    raise
                continue
            try:
                reader = self._reader
                if self._spin:
                    n = recv_into_spinning(self.sock, reader.get_buffer())
                else:
                    n = self.sock.recv_into(reader.get_buffer())
                if not n:
                    raise ConnectionLostError("the server closed the connection")
                reader.buffer_updated(n)
                while not (frames := reader.frames()) and reader.missing():
                    # A large frame has begun: wait for all of it in one call.
                    n = self.sock.recv_into(reader.get_buffer(), 0, _WAITALL)
                    if not n:
                        raise ConnectionLostError("the server closed the connection")
                    reader.buffer_updated(n)
            except BaseException as exc:
                self._stop_reading_after(exc)  # closed, reset, or a frame over the limit
                if isinstance(exc, OSError) and not isinstance(exc, DistprocError):
                    # A reset (the server died with our bytes unread) is a lost
                    # connection like an end of file, for this thread as for the others.
                    raise self._lost() from exc
                raise
            with lock:
                self._stop_reading(frames, slot)
                if slot.done:
                    return

    def _stop_reading(self, frames: Sequence[BytesLike], slot: _ReplySlot | None) -> None:
        """With the lock held: the reading thread hands out the replies it read
        and stops reading.  Their threads wake, and one more to read in its place
        if the reader leaves: it does unless it waits for ``slot`` still."""
        self._reading = False
        try:
            for frame in frames:
                self._dispatch(frame)
        except Exception as exc:
            self._break(exc)
        if self._sleeping:
            leaving = slot is None or slot.done  # after the dispatch: its reply may be in
            self._wake_sleepers(all_of_them=self.broken is not None, leaving=leaving)

    def _stop_reading_after(self, exc: BaseException) -> None:
        """The reading thread met ``exc``: it stops reading, an error breaks the
        connection, and every sleeping thread wakes to see."""
        with self._lock:
            self._reading = False
            if isinstance(exc, Exception):
                self._break(exc)
            self._wake_sleepers(all_of_them=True)

    def _wake_sleepers(self, *, all_of_them: bool, leaving: bool = True) -> None:
        """With the lock held: wake the sleepers whose replies came (or all of them),
        and if the reader is leaving, one more to read in its place."""
        still: list[_ReplySlot] = []
        for sleeper in self._sleeping:
            if all_of_them or sleeper.done:
                sleeper.wake.release()
            else:
                still.append(sleeper)
        if leaving and still:
            still.pop(0).wake.release()
        self._sleeping = still

    def _leave(self, slot: _ReplySlot) -> None:
        """A sleeping thread was interrupted: make sure somebody still reads."""
        with self._lock:
            if slot in self._sleeping:
                self._sleeping.remove(slot)
            if not self._reading and self._sleeping:
                self._sleeping.pop(0).wake.release()

    def _dispatch(self, frame: BytesLike) -> None:
        one = only_record(frame)
        if one is not None and one[0] == REPLY:  # the usual frame: one reply
            _, ident, _, aux, blob = one
            slot = self._slots.pop(ident, None)
            if slot is not None:
                slot.kind, slot.blob, slot.done = KINDS[aux], blob, True
            return
        for op, ident, _, aux, blob in iter_records(frame):
            if op == REPLY:
                slot = self._slots.pop(ident, None)
                if slot is not None:  # else: a cancelled call's late reply
                    slot.kind, slot.blob, slot.done = KINDS[aux], blob, True
            elif op == DEFERRED:
                try:
                    error = convert_to_error(KINDS[aux], self.decode(blob))
                except Exception as exc:
                    error = exc
                self._deferred[ident].append(error)
            else:
                raise ProtocolError(f"unexpected record type {op!r} from the server")

    def _break(self, exc: BaseException) -> None:
        if self.broken is None:
            self.broken = exc
            try:
                self.sock.close()
            finally:
                if self._on_break is not None:
                    self._on_break(self)

    def _lost(self) -> ConnectionLostError:
        return ConnectionLostError(f"lost the connection to the server: {self.broken}")

    def closed_by_server(self) -> bool:
        """Whether this connection is gone (the server closed it, say, before a
        restart at the same address); if so, it is closed here too.

        One non-blocking peek, which takes nothing from the socket.
        """
        if self.broken is None:
            if not _DONTWAIT:
                return False  # cannot tell without blocking: the next call will
            try:
                if self.sock.recv(1, socket.MSG_PEEK | _DONTWAIT):
                    return False  # replies wait to be read: alive
            except (BlockingIOError, InterruptedError):
                return False  # nothing to read, no end of file: alive
            except OSError:
                pass  # reset, or closed here
            self.close()
        return True

    def close(self) -> None:
        with self._lock:
            self._break(ConnectionLostError("the connection was closed"))
            self._wake_sleepers(all_of_them=True)
