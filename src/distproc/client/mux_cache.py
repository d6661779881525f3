"""This process's native connections: one per server, shared, and not inherited by a fork.

:func:`get_multiplexer` hands every proxy and manager of this process the
same :class:`~.mux.Multiplexer` for a server (keyed by address, authkey,
serializer and ``allow_md5``), connecting on first use (:mod:`.connect`)
and again when the server has closed the cached one (a server restarted at
the same address).  A stdlib server is remembered as ``None``: its clients
speak the stdlib's protocol.

A forked child must not use its parent's sockets.  Each fork starts a new
*generation* (:func:`fork_generation`); a connection remembers the
generation that made it, so a proxy tells, without a ``getpid()`` system call
per call, that the connection it holds is its parent's.  The child's cache
starts empty, and so do its session ids, by which the server gives a
reconnecting process its references back.

Each cached connection has a session id of its own (a process may hold
several connections to one server: a ``pickle`` and a ``native`` one, or one
to ``localhost`` and one to ``127.0.0.1``), kept for its reconnects: two
connections with one id would share one set of references on the server.

**TLS.**  A manager given ``tls=`` connects with it, and this process
remembers it for that address: proxies of the server's objects (which know
only the address and the authkey) connect with it too.  A proxy sent to a
process that has not connected to that server with TLS connects without it
and is told that the server requires TLS.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

from ..errors import DistprocError
from ..wire.handshake import FLAG_PICKLE
from .connect import codec_for, connect
from .mux import Multiplexer

if TYPE_CHECKING:
    from ..tls import TLSConfig

__all__ = ["close_multiplexers", "fork_generation", "get_multiplexer", "successor"]

#: Bumped in a forked child (see the module docstring).
_generation = 0


def fork_generation() -> int:
    """This process's fork generation: a connection of another one is the parent's."""
    return _generation


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)
_lock = threading.Lock()
_muxes: dict[tuple[Any, bytes, str, bool], Multiplexer | None] = {}
#: The TLS config this process connects to an address with (see the module docstring).
_tls: dict[Any, TLSConfig] = {}
#: The generation that ``_muxes`` and ``_session`` belong to.
_cache_generation = 0


def _forget(mux: Multiplexer) -> None:
    """Drop ``mux``, whose connection broke, from the cache."""
    with _lock:
        for key, value in list(_muxes.items()):
            if value is mux:
                del _muxes[key]


#: The session id of each cache key, and the generation they belong to.
_sessions: tuple[int, dict[Any, bytes]] = (-1, {})


def _session_id(key: Any) -> bytes:
    """The random id that the connection of ``key`` sends in HELLO: its reconnects
    send it again and find their references."""
    global _sessions
    with _lock:
        if _sessions[0] != _generation:
            _sessions = (_generation, {})
        return _sessions[1].setdefault(key, os.urandom(16))


#: The cache key of each multiplexer made here, for :func:`successor`.
_keys: weakref.WeakKeyDictionary[Multiplexer, Any] = weakref.WeakKeyDictionary()


def successor(mux: Multiplexer) -> Multiplexer | None:
    """The live connection that replaced ``mux`` (which broke) in this process's cache,
    if one has: after a reconnect, the references ``mux`` held are held there."""
    key = _keys.get(mux)
    with _lock:
        found = _muxes.get(key) if key is not None and _cache_generation == _generation else None
    return found if found is not None and found is not mux and found.broken is None else None


def _key(address: Any) -> Any:
    return tuple(address) if isinstance(address, list) else address


def get_multiplexer(
    address: Any,
    authkey: bytes,
    serializer: str,
    *,
    allow_md5: bool = True,
    tls: TLSConfig | None = None,
) -> Multiplexer | None:
    """This process's native connection to ``address``, or ``None`` for a stdlib server.

    ``allow_md5=False`` refuses a server that authenticates with HMAC-MD5 only
    (CPython 3.11 and older), as :func:`~.connection.Client` does.  ``tls``:
    connect with TLS, and remember it for ``address`` (see the module docstring).
    """
    global _cache_generation
    if serializer not in ("pickle", "native"):
        return None
    key = (_key(address), bytes(authkey), serializer, allow_md5)
    with _lock:
        if tls is not None:
            _tls[key[0]] = tls
        else:
            tls = _tls.get(key[0])
        if _cache_generation != _generation:  # a forked child: the parent's sockets are not ours
            _muxes.clear()
            _cache_generation = _generation
        found = key in _muxes
        cached = _muxes.get(key)
    # A connection that its server closed is not handed out again: a new manager
    # for a server that restarted at the same address connects to the new one.
    if found and (cached is None or not cached.closed_by_server()):
        return cached
    mux = _connect(address, bytes(authkey), serializer, allow_md5, _session_id(key), tls)
    if mux is not None:
        _keys[mux] = key
    with _lock:
        existing = _muxes.get(key)
        if existing is not None and mux is not None:
            mux.sock.close()
            return existing
        _muxes[key] = mux
    return mux


def _connect(
    address: Any, authkey: bytes, serializer: str, allow_md5: bool, session_id: bytes,
    tls: TLSConfig | None,
) -> Multiplexer | None:
    flags = FLAG_PICKLE if serializer == "pickle" else 0
    sock, agreement = connect(
        address, authkey, flags=flags, allow_md5=allow_md5, session_id=session_id, tls=tls
    )
    if not agreement.native:
        # A stdlib server: it took our marker for random bytes.  Say goodbye the
        # stdlib way (an empty request would be an error there) and fall back.
        sock.close()
        if serializer == "native":
            raise DistprocError(
                f"{address!r} is not a distproc server, and serializer='native' speaks only "
                "distproc's native protocol (stdlib servers know only pickle and xmlrpclib)"
            )
        return None
    return Multiplexer(
        sock, codec_for(agreement), address, authkey, generation=_generation, on_break=_forget
    )


def close_multiplexers(address: Any = None) -> None:
    """Close this process's native connections (to ``address``, or all)."""
    with _lock:
        items = list(_muxes.items())
    for (addr, *_), mux in items:
        if mux is not None and (address is None or addr == _key(address)):
            mux.close()
    with _lock:
        for key in [k for k, v in _muxes.items() if v is None]:
            if address is None or key[0] == _key(address):
                del _muxes[key]


# A connection whose server went away unnoticed would otherwise be left for the
# interpreter's teardown to collect (a ResourceWarning under -X dev).
atexit.register(close_multiplexers)
