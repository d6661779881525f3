"""Codecs: how a message becomes the payload of a frame.

One base class, one implementation per codec:

* :class:`PickleCodec` — the stdlib's ``'pickle'`` serializer, byte for byte
  what ``ForkingPickler.dumps`` writes (protocol ``pickle.DEFAULT_PROTOCOL``,
  with the ``array.array`` and dict-view reducers that ``multiprocessing``
  registers).  Objects that pickled data names by module path (tokens and
  proxies) are written under their ``multiprocessing.managers`` names, so a
  stdlib peer that has never heard of distproc can load them, and those names
  are read back as distproc's own classes.  The layers above declare those
  names with :func:`register_wire_name`.
* :class:`OlderPickleCodec` — the same in an older pickle protocol, for a peer
  that reads no newer one: Python 2.7 reads protocol 2 at most.  A server
  answers each stdlib client in the protocol of its first request
  (:meth:`Codec.for_peer`).  A Python 2 ``str`` is read as text (latin-1).
* :class:`XmlrpcCodec` — the stdlib's ``'xmlrpclib'`` serializer.

A codec never sees handshake bytes: those are raw frames, so nothing is
unpickled before the peer has proved the authkey.
"""

from __future__ import annotations

import array
import copyreg
import importlib
import io
import pickle
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

__all__ = [
    "BytesLike",
    "Codec",
    "OlderPickleCodec",
    "PickleCodec",
    "XmlrpcCodec",
    "older_pickle_codec",
    "pickle_protocol",
    "register_pickle_reducer",
    "register_wire_name",
    "wire_global",
    "wire_names",
]

#: What a codec can decode from: a frame, or a slice of one without a copy.
BytesLike = bytes | bytearray | memoryview

#: (base class, reducer) pairs consulted for outgoing pickles, in order.
_OUTGOING: list[tuple[type, Callable[[Any], Any]]] = []
#: (module, qualname) -> object, consulted when an incoming pickle names a global.
_INCOMING: dict[tuple[str, str], Any] = {}
#: object -> (module, qualname): the name it travels under (see :func:`wire_global`).
_WIRE_NAME: dict[Any, tuple[str, str]] = {}


def register_pickle_reducer(cls: type, reducer: Callable[[Any], Any]) -> None:
    """Pickle instances of ``cls`` (and subclasses) with ``reducer(obj)``."""
    _OUTGOING.append((cls, reducer))


def register_wire_name(module: str, qualname: str, obj: Any) -> None:
    """``obj`` (a class or function) travels as the global ``module.qualname``.

    Incoming pickles that name it load ``obj``; outgoing reducers write it
    with :func:`wire_global`.
    """
    _INCOMING[(module, qualname)] = obj
    _WIRE_NAME[obj] = (module, qualname)
    _ALIASED_MODULES.add(module.encode("utf-8"))


def wire_global(obj: Any) -> Any:
    """What a reducer returns to write ``obj`` under its wire name.

    That is the object the name resolves to *now*: the stdlib's (pickle
    checks that a global's name leads back to the object written), or
    ``obj`` itself while :func:`distproc.install` has put distproc's module in
    the stdlib's place.  Either way the pickle names ``module.qualname``.
    An object without a wire name is returned as it is.
    """
    name = _WIRE_NAME.get(obj)
    if name is None:
        return obj
    module = sys.modules.get(name[0]) or importlib.import_module(name[0])
    return getattr(module, name[1])


def wire_names(module: str) -> dict[str, Any]:
    """The objects that travel under a name of ``module``, by that name."""
    return {qualname: obj for (mod, qualname), obj in _INCOMING.items() if mod == module}


#: Modules named in ``_INCOMING``: a pickle that names none of them (in bytes,
#: so at least once literally) loads with ``pickle.loads`` itself.
_ALIASED_MODULES: set[bytes] = set()


def _reduce_array(a: array.array[Any]) -> tuple[Any, ...]:
    return array.array, (a.typecode, a.tobytes())


def _reduce_as_list(view: Any) -> tuple[Any, ...]:
    return list, (list(view),)


_EXTRA_REDUCERS: dict[type, Callable[[Any], Any]] = {array.array: _reduce_array}
_VIEW_TYPES: tuple[type, ...] = (type({}.items()), type({}.keys()), type({}.values()))
for _view in _VIEW_TYPES:
    _EXTRA_REDUCERS[_view] = _reduce_as_list


class _Pickler(pickle.Pickler):
    dispatch_table = {**copyreg.dispatch_table, **_EXTRA_REDUCERS}

    def reducer_override(self, obj: Any) -> Any:
        for cls, reducer in _OUTGOING:
            if isinstance(obj, cls):
                return reducer(obj)
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        alias = _INCOMING.get((module, name))
        if alias is not None:
            return alias
        return super().find_class(module, name)


class _ViewReader:
    """A read-only file over a buffer, for the unpickler: large ``bytes`` and
    ``str`` payloads are copied once, straight into the objects they become."""

    __slots__ = ("_pos", "_view")

    def __init__(self, data: BytesLike) -> None:
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        start = self._pos
        end = len(self._view) if size < 0 else min(len(self._view), start + size)
        self._pos = end
        return bytes(self._view[start:end])

    def readinto(self, buffer: Any) -> int:
        start = self._pos
        size = min(len(buffer), len(self._view) - start)
        buffer[:size] = self._view[start : start + size]
        self._pos = start + size
        return size

    def readline(self) -> bytes:
        rest = self._view[self._pos :]
        size = len(rest)
        for chunk in range(0, len(rest), 4096):  # protocol 0's lines: mostly short
            end = bytes(rest[chunk : chunk + 4096]).find(b"\n")
            if end >= 0:
                size = chunk + end + 1
                break
        self._pos += size
        return bytes(rest[:size])


class _Collector:
    """A pickler's file that keeps what one ``dump`` writes, as written: a large
    ``bytes`` payload arrives as the object itself (protocol 4 writes those
    around its frames).

    Anything mutable (protocol 5 hands over a large ``bytearray`` itself) is
    copied: the parts may be written after the call that made them returns.
    """

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[BytesLike] = []

    def write(self, data: Any) -> None:
        self.parts.append(data if type(data) is bytes else bytes(data))


class _Reused:
    """A pickler kept by one thread: making a pickler costs more than pickling
    a small message.

    Nothing here refers back to this object, so dropping it frees the pickler
    and whatever its file still holds at once, not at the next garbage
    collection: a large message it held would keep its pages, and every later
    large one would be unpickled into fresh memory.
    """

    __slots__ = ("busy", "file", "pickler")

    def __init__(self, protocol: int) -> None:
        self.busy = False
        self.file = _Collector()
        self.pickler = _Pickler(self.file, protocol)


#: Payloads at least this large are unpickled through :class:`_ViewReader`.
_LARGE = 64 * 1024


class Codec(ABC):
    """Turns messages into frame payloads and back."""

    name: ClassVar[str]

    def dumps_parts(self, obj: Any) -> list[BytesLike]:
        """``dumps(obj)``, as parts to write in order; large payloads are not copied."""
        return [self.dumps(obj)]

    @abstractmethod
    def dumps(self, obj: Any) -> bytes: ...

    @abstractmethod
    def loads(self, data: BytesLike) -> Any: ...

    def for_peer(self, message: BytesLike) -> Codec:
        """The codec to read and answer a peer with, from its first ``message``."""
        return self


class PickleCodec(Codec):
    """The stdlib's ``'pickle'`` serializer."""

    name = "pickle"

    def __init__(self, protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
        self.protocol = protocol
        self._local = threading.local()

    def dumps(self, obj: Any) -> bytes:
        parts = self.dumps_parts(obj)
        if len(parts) == 1:
            return bytes(parts[0])
        return b"".join(parts)

    def dumps_parts(self, obj: Any) -> list[BytesLike]:
        local = self._local
        try:
            reused: _Reused | None = local.reused
        except AttributeError:
            reused = None
        if reused is None:
            reused = local.reused = _Reused(self.protocol)
        elif reused.busy:  # a reducer pickles with this codec on this thread: a pickler of its own
            own = _Collector()
            _Pickler(own, self.protocol).dump(obj)
            return own.parts
        reused.busy = True
        parts: list[BytesLike] = []
        reused.file.parts = parts
        try:
            reused.pickler.dump(obj)
        except BaseException:
            local.reused = None  # start afresh after a failed dump
            raise
        finally:
            reused.pickler.clear_memo()  # the memo would keep the message alive
            reused.busy = False
        if len(parts) > 1:
            # A large message (small ones are written at once): the pickler's
            # buffer may have grown with it, and would be allocated at that size
            # for every message after.  A new pickler next time.
            local.reused = None
        return parts

    def for_peer(self, message: BytesLike) -> Codec:
        """This codec, unless the peer's ``message`` is in an older protocol: then
        that one's, which the peer surely reads (a Python 2.7 peer writes 2)."""
        protocol = pickle_protocol(message)
        return self if protocol >= self.protocol else older_pickle_codec(protocol)

    def loads(self, data: BytesLike) -> Any:
        # A large payload: from a BytesIO the unpickler would read it into fresh
        # memory twice; through _ViewReader it is copied once, into its objects.
        if len(data) >= _LARGE:
            return _Unpickler(_ViewReader(data)).load()
        raw = data if type(data) is bytes else bytes(data)
        for module in _ALIASED_MODULES:
            if raw.find(module) >= 0:  # find(): "in" costs twice as much on bytes
                return _Unpickler(io.BytesIO(raw)).load()
        return pickle.loads(raw)  # names no aliased global: no find_class hook needed


def pickle_protocol(data: BytesLike) -> int:
    """The protocol a pickle was written in: that of its ``PROTO`` opcode (protocol
    2 and later begin with one), else 0 (protocols 0 and 1, which a reader of
    protocol 0 reads too)."""
    return data[1] if len(data) >= 2 and data[0] == 0x80 else 0


#: Python 3 globals that Python 2 has under another name, beyond the table that
#: pickle's ``fix_imports`` applies (``_compat_pickle``): ``queue.Empty`` is
#: ``_queue.Empty`` since Python 3.7, which Python 2 lacks.
_PYTHON2_NAMES: dict[tuple[str, str], bytes] = {("_queue", "Empty"): b"Queue\nEmpty\n"}


class _OlderPickler(pickle._Pickler):
    """The pure-Python pickler, with our reducers: its ``save_global`` can be told
    to write Python 2's name of a global."""

    dispatch_table = _Pickler.dispatch_table
    reducer_override = _Pickler.reducer_override

    def __init__(self, file: io.BytesIO, protocol: int) -> None:
        super().__init__(file, protocol)
        self._python2 = protocol < 3  # what Python 2 reads

    def save_global(self, obj: Any, name: str | None = None) -> None:
        key = (str(getattr(obj, "__module__", "")), name or str(getattr(obj, "__qualname__", "")))
        python2_name = _PYTHON2_NAMES.get(key) if self._python2 else None
        if python2_name is None:
            super().save_global(obj, name)  # type: ignore[misc]  # typeshed does not list save_global
            return
        self.write(pickle.GLOBAL + python2_name)  # type: ignore[attr-defined]  # the pure-Python Pickler's
        self.memoize(obj)  # type: ignore[attr-defined]  # the pure-Python Pickler's


class OlderPickleCodec(PickleCodec):
    """Pickle in ``protocol``, older than ours, for a peer that reads no newer one.

    That peer is Python 2.7 (protocol 2) in practice, so a Python 2 ``str``
    (bytes, in Python 2) is read as a ``str`` of one character per byte
    (latin-1): the typeids, method names and keyword names of its requests
    are text, as the stdlib's protocol needs, a ``datetime`` it sends loads,
    and nothing is lost (``s.encode('latin-1')`` gives the bytes back).  A
    Python 3 ``str`` reaches it as ``unicode`` and ``bytes`` as ``str``, and
    globals go under their Python 2 names (``queue.Empty`` as ``Queue.Empty``).
    It pickles with the pure-Python pickler, which is slower: such peers are few.
    """

    def dumps_parts(self, obj: Any) -> list[BytesLike]:
        file = io.BytesIO()
        _OlderPickler(file, self.protocol).dump(obj)
        return [file.getvalue()]

    def loads(self, data: BytesLike) -> Any:
        return _Unpickler(io.BytesIO(bytes(data)), encoding="latin-1").load()


_older: dict[int, OlderPickleCodec] = {}


def older_pickle_codec(protocol: int) -> OlderPickleCodec:
    """The codec of ``protocol`` (older than ours), one per protocol."""
    codec = _older.get(protocol)
    if codec is None:
        codec = _older.setdefault(protocol, OlderPickleCodec(protocol))
    return codec


class XmlrpcCodec(Codec):
    """The stdlib's ``'xmlrpclib'`` serializer (tuples come back as lists)."""

    name = "xmlrpclib"

    def dumps(self, obj: Any) -> bytes:
        import xmlrpc.client  # here: it brings http and email, which nothing else needs

        return xmlrpc.client.dumps((obj,), None, None, None, True).encode("utf-8")

    def loads(self, data: BytesLike) -> Any:
        import xmlrpc.client

        (obj,), _ = xmlrpc.client.loads(bytes(data).decode("utf-8"))
        return obj
