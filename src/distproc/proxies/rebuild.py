"""Rebuilding a proxy from a pickle: what it borrows from the message it came in.

A proxy unpickled from a message (a *nested* proxy: a dict stored in a list)
is rebuilt by :func:`~.base.RebuildProxy`, which asks :func:`prepare` how,
from the call context (:mod:`distproc.callcontext`):

* inside the server that holds its referent, it is *manager-owned*: it takes
  a counted reference in that server's table and gives it back when it is
  collected (the stdlib instead keeps such referents forever, CPython #103136);
* in a reply on a native connection whose session took a reference for it
  (``distproc_adopt``), it *adopts* that reference on the same connection, with
  no round trip of its own;
* otherwise it borrows the authkey (and, for a registered proxy type, the
  manager) of the connection or proxy that received it, where the stdlib
  falls back to ``current_process().authkey`` and fails with any other key.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from multiprocessing import process
from typing import Any

from ..callcontext import ReferenceTable, ReplyConnection, context
from ..wire.messages import Token

__all__ = ["Rebuilding", "prepare", "same_address"]


def same_address(a: Any, b: Any) -> bool:
    """Whether two addresses name one server (a list and a tuple alike)."""
    return tuple(a) == tuple(b) if not isinstance(a, str) else a == b


@dataclass
class Rebuilding:
    """How one proxy is rebuilt: :func:`prepare` says, :meth:`settle` finishes."""

    token: Token
    #: Whether the new proxy takes a reference of its own (an incref).
    incref: bool
    #: The server table in which it holds a reference while it lives.
    held_by: ReferenceTable | None = None
    #: The connection on which it adopts the reference its server took for it.
    adopt_on: ReplyConnection | None = None

    def settle(self, proxy: Any) -> None:
        """Once ``proxy`` is made: a manager-owned one gives its reference back when collected."""
        if self.held_by is not None:
            weakref.finalize(proxy, _release, self.held_by, str(self.token.id))


def prepare(token: Token, kwds: dict[str, Any], *, registered: bool) -> Rebuilding:
    """Fill in ``kwds`` for the proxy type's call; ``registered``: not an AutoProxy."""
    server = context.server
    held_by = None
    if server is not None and server.address == token.address:
        kwds["manager_owned"] = True
        server.table.incref(token.id)  # type: ignore[arg-type]  # id is set
        held_by = server.table
    adopt = kwds.pop("distproc_adopt", False)
    receiver = context.receiver
    if receiver is not None and "authkey" not in kwds and receiver._token.address == token.address:
        kwds["authkey"] = receiver._authkey
        if receiver._manager is not None and registered:
            kwds.setdefault("manager", receiver._manager)
    mux = context.mux
    if mux is not None and "authkey" not in kwds and same_address(mux.address, token.address):
        kwds["authkey"] = mux.authkey
    adopt_on = mux if adopt and held_by is None else None
    if adopt_on is not None:
        kwds["incref"] = False  # the server took this reference for our connection
    incref = kwds.pop("incref", True) and not getattr(
        process.current_process(), "_inheriting", False
    )
    return Rebuilding(token, incref, held_by, adopt_on)


def _release(table: ReferenceTable, ident: str) -> None:
    with contextlib.suppress(KeyError):
        table.decref(ident)
