"""Messages after the handshake, in the stdlib's ``'pickle'``/``'xmlrpclib'`` form.

=======================  ====================================================
message                  form
=======================  ====================================================
request                  ``(ident, methodname, args, kwds)``; ``ident`` is
                         ``None`` for a server method (``create``, ``incref``...)
reply                    ``(kind, result)``, kind one of the constants below
=======================  ====================================================

A ``#PROXY`` reply carries ``(exposed, Token)``.  :class:`Token` is written on
the wire as ``multiprocessing.managers.Token`` and read back as this class, so
stdlib peers and distproc peers understand each other's tokens (also while
:func:`distproc.install` makes that name distproc's).
"""

from __future__ import annotations

from typing import Any

from .codecs import register_pickle_reducer, register_wire_name, wire_global

__all__ = [
    "KIND_ERROR",
    "KIND_PROXY",
    "KIND_RETURN",
    "KIND_TRACEBACK",
    "KIND_UNSERIALIZABLE",
    "Token",
]

#: The kinds of a reply ``(kind, result)`` (see the reference, section 4).
KIND_RETURN = "#RETURN"
KIND_ERROR = "#ERROR"
KIND_TRACEBACK = "#TRACEBACK"
KIND_UNSERIALIZABLE = "#UNSERIALIZABLE"
KIND_PROXY = "#PROXY"


class Token:
    """Names a shared object: its type id, its server's address and its id there."""

    __slots__ = ("address", "id", "typeid")

    def __init__(self, typeid: str, address: Any, id: str | None) -> None:
        self.typeid = typeid
        self.address = address
        self.id = id

    def __getstate__(self) -> tuple[str, Any, str | None]:
        return (self.typeid, self.address, self.id)

    def __setstate__(self, state: tuple[str, Any, str | None]) -> None:
        self.typeid, self.address, self.id = state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(typeid={self.typeid!r}, "
            f"address={self.address!r}, id={self.id!r})"
        )


def _reduce_token(token: Token) -> tuple[Any, ...]:
    return wire_global(Token), (token.typeid, token.address, token.id)


register_pickle_reducer(Token, _reduce_token)
register_wire_name("multiprocessing.managers", "Token", Token)
