"""What the code deep inside a message's encoding or decoding must know: one home, per thread.

A proxy unpickled from a message (a *nested* proxy: a dict stored in a list)
must know where it is being rebuilt, to take its reference on the right
server and borrow the right authkey; a proxy pickled into a native reply must
know which session sends it, so that the session takes the reference that the
client will adopt.  Pickle's hooks get no argument for that, so whoever
decodes or encodes a message says so in :data:`context`, a thread-local, for
as long as it does, and the proxies (:mod:`distproc.proxies`) read it:

============  ==========================================  ===========================
slot          set while                                   read by
============  ==========================================  ===========================
``server``    a server decodes a request                  ``RebuildProxy``: the proxy
                                                          holds a counted reference
                                                          in that server's table
``session``   a native session encodes a reply            the proxies' pickle
                                                          reducer: the session takes
                                                          the reference for its client
``mux``       a multiplexer decodes a reply               ``RebuildProxy``: borrow its
                                                          authkey, adopt the reference
``receiver``  a stdlib-protocol proxy decodes its reply   ``RebuildProxy``: borrow its
                                                          authkey and manager
============  ==========================================  ===========================

Each slot is typed by a Protocol of what is read from it, so this module
(like :mod:`distproc.errors`) imports nothing of distproc and every layer may
use it.  A slot is ``None`` when nothing is being decoded or encoded there.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

__all__ = [
    "DecodingServer",
    "EncodingSession",
    "ReceivingProxy",
    "ReferenceTable",
    "ReplyConnection",
    "context",
]


class ReferenceTable(Protocol):
    """A server's counts of the references to its objects."""

    def incref(self, ident: str) -> None: ...

    def decref(self, ident: str) -> Any: ...


class DecodingServer(Protocol):
    """The server decoding a request."""

    @property
    def address(self) -> Any: ...

    @property
    def table(self) -> ReferenceTable: ...


class EncodingSession(Protocol):
    """The native session encoding a reply."""

    @property
    def address(self) -> Any:
        """Its server's address."""
        ...

    def take_reference(self, ident: str) -> None:
        """Hold one more reference to ``ident`` for the session's client."""
        ...


class ReplyConnection(Protocol):
    """The multiplexer (a client's native connection) decoding a reply."""

    @property
    def address(self) -> Any: ...

    @property
    def authkey(self) -> bytes: ...


class ReceivingProxy(Protocol):
    """The stdlib-protocol proxy decoding the reply to its call."""

    @property
    def _token(self) -> Any:
        """Its referent's token (``.address``: its server's)."""
        ...

    @property
    def _authkey(self) -> bytes: ...

    @property
    def _manager(self) -> Any: ...


class _CallContext(threading.local):
    """One thread's slots (see the module docstring); the class holds the defaults."""

    server: DecodingServer | None = None
    session: EncodingSession | None = None
    mux: ReplyConnection | None = None
    receiver: ReceivingProxy | None = None


#: This thread's call context.
context = _CallContext()
