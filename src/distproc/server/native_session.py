"""distproc's native protocol on one connection, server side: :class:`NativeSession`.

Two distproc peers switch to it right after the handshake (the upgrade marker
is in the challenges).  Frames carry batches of records (see
:mod:`distproc.wire.records` for the layout); values are encoded with pickle
when both ends allow it, else with the native codec
(:mod:`distproc.wire.native`), which never unpickles.  Replies made while a
read's frames are handled go out together, in one write, when it is over.

``rid`` matches replies to calls, so many calls are in flight at once on one
connection, from every thread of the client process; ``tid`` names the client
thread, for objects that must see one thread per caller (``RLock``, on a
sticky thread of that caller's).  ``ident`` ``None`` names a server method
(``create``, ``incref``, ...).  A ``noreply`` call gets no reply unless it
fails: then a ``DEFERRED`` record, for the calling thread to raise.  A
``CANCEL`` drops a call that waits (a ``get()`` not served yet takes nothing).

References that proxies of this connection hold are counted per connection.
``create`` replies with ``(ident, exposed, hints)``: the proxy owns the new
reference (one round trip per proxy), and ``hints['defer']`` lists the
methods the client may send without waiting (``put`` on an unbounded queue
served by the loop).  A proxy pickled into a reply takes a reference for the
client too (:meth:`NativeSession.take_reference`).  When the connection drops,
its references wait ``ServerConfig.reconnect_grace`` seconds for the client's
process to come back with the session id of its ``HELLO``, then are released.
Two connections that name the same session id and drop share one wait: their
references are merged, never overwritten, and released together after the
later drop's grace.

A record whose fields have the wrong types (an id that is no ``str``, say)
fails alone, with an error reply; a request id already in flight on the
connection is a protocol error, and the connection is dropped (its calls
cancelled, so a ``get()`` takes nothing).  At most
``ServerConfig.max_calls_per_connection`` calls wait at once; a reply that
cannot be delivered (its call was cancelled) gives back the reference it
would have carried, so a cancelled ``create`` leaves nothing behind.  A
call's arguments decode to at most ``ServerConfig.max_decoded_items`` values.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import traceback
from typing import Any

from ..callcontext import context
from ..errors import ProtocolError
from ..wire.codecs import BytesLike, Codec
from ..wire.messages import KIND_ERROR, KIND_PROXY, KIND_RETURN, KIND_TRACEBACK, KIND_UNSERIALIZABLE
from ..wire.records import (
    BATCH_LIMIT,
    CALL,
    CANCEL,
    DEFERRED,
    HELLO,
    KIND_CODES,
    NOREPLY,
    REPLY,
    call_fields,
    iter_records,
    only_record,
    record_parts,
)
from .calls import Call, execute, give_back, serving, traceback_text
from .connection import ServerConnection
from .context import Message, ServerContext
from .queues import is_loop_servable
from .threads import CallThread

__all__ = ["NativeSession"]

log = logging.getLogger("distproc.server")

#: A call record larger than this is decoded on a thread, not on the loop.
DECODE_OFF_LOOP = 1024 * 1024

def hints_for(obj: Any) -> dict[str, Any]:
    """What a client may do without waiting for replies, for this object."""
    if is_loop_servable(obj) and obj.maxsize <= 0:
        return {"defer": ["put", "put_many"]}
    defer = getattr(type(obj), "__distproc_defer__", None)
    return {"defer": list(defer)} if defer else {}


class _NativeCall(Call):
    __slots__ = ("noreply", "owns", "rid", "session", "tid")

    def __init__(self, session: NativeSession, rid: int, tid: int, noreply: bool) -> None:
        # Call.__init__, inlined: a call is made for every request.
        self.server = session.server
        self.entry = None
        self.methodname = ""
        self.cancel = None
        self.session = session
        self.rid = rid
        self.tid = tid
        self.noreply = noreply
        self.owns = False  # a create: the reply's ident becomes this connection's reference

    @property
    def connection(self) -> ServerConnection:
        return self.session.conn

    def deliver(self, msg: Message) -> None:
        session = self.session
        if session.pending.get(self.rid) is not self:
            give_back(session.server, msg, owns=self.owns)  # cancelled, or the connection is gone
            return
        del session.pending[self.rid]
        kind, value = msg
        if kind == KIND_PROXY:
            session.refs[value[1].id] += 1
        elif self.owns and kind == KIND_RETURN:
            session.refs[value[0]] += 1
        session.answer(self.rid, self.tid, self.noreply, kind, value)


class NativeSession:
    """The native protocol on one connection."""

    protocol = "native"

    def __init__(self, conn: ServerConnection, codec: Codec) -> None:
        self.conn = conn
        self.server: ServerContext = conn.server
        self.codec = codec
        self.pending: dict[int, _NativeCall] = {}
        self.refs: collections.Counter[str] = collections.Counter()
        #: Of :attr:`refs`, those taken over from a dropped connection (see :meth:`hello`).
        self.taken_over: collections.Counter[str] = collections.Counter()
        self.out: list[BytesLike] = []
        self.out_size = 0
        self.flush_scheduled = False
        #: The sticky thread of each client thread (see ``.threads``), made on first use.
        self.threads: dict[int, CallThread] = {}
        self.session_id = b""

    # ------------------------------------------------------------- frames
    def frame_received(self, frame: BytesLike) -> None:
        # Replies made while this frame is read go out with the connection's
        # flush at the end of the read, not in a loop iteration of their own.
        self.flush_scheduled = True
        try:
            one = only_record(frame)
            if one is not None and one[0] == CALL:  # the usual frame: one call
                _, rid, tid, aux, blob = one
                self.call_record(rid, tid, aux, blob)
                return
            for op, rid, tid, aux, blob in iter_records(frame):
                if op == CALL:
                    self.call_record(rid, tid, aux, blob)
                elif op == CANCEL:
                    self.cancel(rid)
                elif op == HELLO:
                    self.hello(bytes(blob))
                else:
                    raise ValueError(f"unknown record type {op!r}")
        except Exception as exc:
            self.server.limiter.warning(
                "native", "dropping native connection from %s: %s", self.conn.peer, exc
            )
            self.conn.abort()

    def queue_out(self, op: int, id: int, kind: str, value: Any) -> None:
        """Encode one reply and queue it for the next frame."""
        context.session = self  # a proxy in the reply: see take_reference
        try:
            parts = self.codec.dumps_parts(value)
        except Exception:
            kind, parts = KIND_UNSERIALIZABLE, [self.codec.dumps(traceback.format_exc())]
        finally:
            context.session = None
        record = record_parts(op, id, 0, KIND_CODES[kind], parts)
        size = sum(map(len, record))
        if self.out_size + size > BATCH_LIMIT and self.out:
            self._write_out()  # a batch stays within BATCH_LIMIT (see wire.records)
        self.out += record
        self.out_size += size
        if not self.flush_scheduled:
            self.flush_scheduled = True
            loop = self.server.loop
            assert loop is not None
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the queued replies: one frame, one write (or more past BATCH_LIMIT)."""
        self.flush_scheduled = False
        self._write_out()

    def _write_out(self) -> None:
        out = self.out
        if not out:
            return
        self.out = []
        self.out_size = 0
        self.conn.send_parts(out)

    @property
    def address(self) -> Any:
        """The server's address."""
        return self.server.address

    def take_reference(self, ident: str) -> None:
        """Hold one more reference to ``ident`` for this connection: a proxy pickled
        into a reply, which the client adopts without a round trip of its own."""
        self.server.table.incref(ident)
        self.refs[ident] += 1

    # -------------------------------------------------------------- calls
    def call_record(self, rid: int, tid: int, aux: int, blob: BytesLike) -> None:
        """Decode one ``CALL`` record and make the call (a large one is decoded off the loop)."""
        if rid in self.pending:
            raise ProtocolError(f"request id {rid} is already in flight on this connection")
        noreply = bool(aux & NOREPLY)
        if len(blob) > DECODE_OFF_LOOP:
            self._call_off_loop(rid, tid, noreply, blob)
            return
        try:
            request = self._decode_call(blob)
        except (Exception, SystemExit) as exc:  # unpickling runs the peer's code
            self._bad_call(rid, tid, noreply, exc)
            return
        ident, method, args, kwds = request
        self.call(rid, tid, ident, method, args, kwds, noreply)

    def _decode_call(
        self, blob: BytesLike
    ) -> tuple[str | None, str, tuple[Any, ...], dict[str, Any]]:
        """A ``CALL`` record's ``(ident, method, args, kwds)``, each checked for its type."""
        return call_fields(self.server.decode(blob, self.codec))

    def _bad_call(self, rid: int, tid: int, noreply: bool, exc: BaseException) -> None:
        self.server.limiter.warning("call", "bad call from %s: %s", self.conn.peer, exc)
        if noreply:
            self.queue_out(DEFERRED, tid, KIND_TRACEBACK, traceback_text(exc))
        else:
            self.queue_out(REPLY, rid, KIND_TRACEBACK, traceback_text(exc))

    def _call_off_loop(self, rid: int, tid: int, noreply: bool, blob: BytesLike) -> None:
        """Decode a large call on a thread, so that the loop serves others meanwhile; the
        connection is held until then, so that its calls keep their order."""
        conn, loop = self.conn, self.server.loop
        assert loop is not None
        conn.hold("decoding")

        def decode() -> None:
            try:
                outcome: Any = self._decode_call(blob)
            except (Exception, SystemExit) as exc:
                outcome = exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to answer
                loop.call_soon_threadsafe(decoded, outcome)

        def decoded(outcome: Any) -> None:
            if conn.session is not self:
                return  # the connection is gone
            if isinstance(outcome, BaseException):
                self._bad_call(rid, tid, noreply, outcome)
            else:
                ident, method, args, kwds = outcome
                self.call(rid, tid, ident, method, args, kwds, noreply)
            conn.release("decoding")

        self.server.pool.submit(decode)

    def call(
        self,
        rid: int,
        tid: int,
        ident: Any,
        method: str,
        args: tuple[Any, ...],
        kwds: dict[str, Any],
        noreply: bool,
    ) -> None:
        """Run one call; its reply goes out with the next flush."""
        if (
            (method == "get" or method == "put")
            and ident is not None
            and not kwds
            and self.queue_call(rid, tid, ident, method, args, noreply)
        ):
            return
        if len(self.pending) >= self.server.config.max_calls_per_connection:
            limit = self.server.config.max_calls_per_connection
            self.answer(rid, tid, noreply, KIND_TRACEBACK, _too_many_calls(limit))
            return
        call = _NativeCall(self, rid, tid, noreply)
        self.pending[rid] = call
        if ident is not None:
            execute(self.server, call, ident, method, args, kwds, lambda: self.thread_of(tid))
        else:
            self.server_method(call, method, args, kwds)

    def queue_call(
        self, rid: int, tid: int, ident: Any, method: str, args: tuple[Any, ...], noreply: bool
    ) -> bool:
        """Serve ``put(item)`` or ``get()`` of a loop-served queue that completes at
        once, without the call object that a call which waits needs (the hottest
        path there is).  ``False``: nothing was done; the call takes the general path.
        """
        entry = self.server.table.entries.get(ident)
        if entry is None or entry.method_to_typeid or method not in entry.exposed:
            return False
        loop_methods, servable = entry.serving or serving(entry)
        if not servable or method in loop_methods:
            return False
        waiting = self.server.loop_queue(entry.obj)
        try:
            if method == "get":
                if args:
                    return False
                found, value = waiting.get_now()
                if not found:
                    return False
            elif len(args) != 1 or not waiting.put_now(args[0]):
                return False
            else:
                value = None
        except Exception as exc:
            self.answer(rid, tid, noreply, KIND_ERROR, exc)
            return True
        self.answer(rid, tid, noreply, KIND_RETURN, value)
        if method == "put":
            waiting.serve_getters()
        return True

    def answer(self, rid: int, tid: int, noreply: bool, kind: str, value: Any) -> None:
        """Queue the reply to call ``rid``: for a ``noreply`` call, only an error."""
        if noreply:
            if kind != KIND_RETURN:
                self.queue_out(DEFERRED, tid, kind, value)
        else:
            self.queue_out(REPLY, rid, kind, value)

    def cancel(self, rid: int) -> None:
        call = self.pending.pop(rid, None)
        if call is not None and call.cancel is not None:
            call.cancel()

    def thread_of(self, tid: int) -> CallThread:
        """The sticky thread of client thread ``tid``."""
        thread = self.threads.get(tid)
        if thread is None:
            thread = self.threads[tid] = CallThread(f"distproc-native-{tid}")
        return thread

    def server_method(
        self, call: _NativeCall, method: str, args: tuple[Any, ...], kwds: dict[str, Any]
    ) -> None:
        """Serve a call of a server method; references are counted for this connection."""
        server = self.server
        try:
            if method == "incref":
                server.table.incref(args[0])
                self.refs[args[0]] += 1
                call.deliver((KIND_RETURN, None))
            elif method == "decref":
                self.release(args[0], taken_over=len(args) > 1 and args[1] is True)
                call.deliver((KIND_RETURN, None))
            elif method == "create":
                call.owns = True  # the proxy owns the reference: one round trip per proxy
                server.call_server_method(
                    self.conn, method, args, kwds, lambda msg: call.deliver(_hinted(server, msg))
                )
            else:
                server.call_server_method(self.conn, method, args, kwds, call.deliver)
        except Exception as exc:
            call.deliver((KIND_TRACEBACK, traceback_text(exc)))

    def release(self, ident: str, *, taken_over: bool = False) -> None:
        """Give back one reference to ``ident``.  ``taken_over``: one that a proxy took
        on the connection this one replaced; if this one took over none (the server
        restarted since, and the id may be another object's), nothing is released."""
        if taken_over:
            if self.taken_over[ident] <= 0:
                self.taken_over.pop(ident, None)
                return
            self.taken_over[ident] -= 1
        if self.refs[ident] <= 0:
            raise KeyError(f"this connection holds no reference to {ident!r}")
        self.refs[ident] -= 1
        if not self.refs[ident]:
            del self.refs[ident]
        self.server.table.decref(ident)

    def hello(self, session_id: bytes) -> None:
        """The client names its process; take back references it left on a dropped connection."""
        if self.session_id:
            raise ProtocolError("a second HELLO on one connection")
        self.session_id = session_id
        orphaned = self.server.orphans.pop(session_id, None)
        if orphaned is not None:
            refs, timer = orphaned
            timer.cancel()
            self.refs.update(refs)
            self.taken_over.update(refs)

    def closed(self) -> None:
        """The connection is gone: cancel its calls; its references wait for a reconnect."""
        pending, self.pending = self.pending, {}
        for call in pending.values():
            if call.cancel is not None:
                call.cancel()
        refs, self.refs = self.refs, collections.Counter()
        self.taken_over.clear()
        server = self.server
        if refs and self.session_id and server.loop is not None and not server.loop.is_closed():
            earlier = server.orphans.pop(self.session_id, None)
            if earlier is not None:  # another connection of that id dropped too: one wait
                earlier[1].cancel()
                refs.update(earlier[0])
            timer = server.loop.call_later(
                server.config.reconnect_grace, self._release_orphans, self.session_id
            )
            server.orphans[self.session_id] = (refs, timer)
        else:
            _release(server, refs)
        for thread in self.threads.values():
            thread.stop()
        self.threads.clear()


    def _release_orphans(self, session_id: bytes) -> None:
        orphaned = self.server.orphans.pop(session_id, None)
        if orphaned is not None:
            _release(self.server, orphaned[0])


def _hinted(server: ServerContext, msg: Message) -> Message:
    """A ``create`` reply with the hints of the new object: ``(ident, exposed, hints)``."""
    kind, value = msg
    if kind != KIND_RETURN:
        return msg
    ident, exposed = value
    return KIND_RETURN, (ident, exposed, hints_for(server.table.get(ident).obj))


def _too_many_calls(limit: int) -> str:
    return (
        "Traceback (most recent call last):\n"
        f"distproc.errors.ProtocolError: too many calls in flight on this connection "
        f"({limit}, ServerConfig.max_calls_per_connection)\n"
    )


def _release(server: ServerContext, refs: collections.Counter[str]) -> None:
    for ident, count in refs.items():
        for _ in range(count):
            try:
                server.table.decref(ident)
            except KeyError:
                break
