"""Proxies on the wire under the stdlib's names, so that stdlib peers can load them.

A pickled proxy names its rebuild function and its class.  Those are written
as ``multiprocessing.managers.RebuildProxy`` and the stdlib's proxy classes,
which a stdlib peer has, and the same names are read back as distproc's
(see :func:`distproc.wire.codecs.register_wire_name`).  A proxy pickled
into a native reply also has its reference taken for the client by the
session that sends it (see :mod:`.rebuild`).  Importing this module
registers it all with the pickle codec.
"""

from __future__ import annotations

from typing import Any

from ..callcontext import context
from ..wire.codecs import register_pickle_reducer, register_wire_name, wire_global
from .base import AutoProxy, BaseProxy, RebuildProxy
from .rebuild import same_address
from .typed import (
    AcquirerProxy,
    ArrayProxy,
    BarrierProxy,
    BaseListProxy,
    ConditionProxy,
    DictProxy,
    EventProxy,
    IteratorProxy,
    ListProxy,
    NamespaceProxy,
    PoolProxy,
    ValueProxy,
)

__all__ = ["WIRE_NAMES"]

#: Each object that pickled proxies name, by its name in ``multiprocessing.managers``.
WIRE_NAMES: dict[str, Any] = {
    "RebuildProxy": RebuildProxy,
    "AutoProxy": AutoProxy,
    "IteratorProxy": IteratorProxy,
    "AcquirerProxy": AcquirerProxy,
    "ConditionProxy": ConditionProxy,
    "EventProxy": EventProxy,
    "BarrierProxy": BarrierProxy,
    "NamespaceProxy": NamespaceProxy,
    "ValueProxy": ValueProxy,
    "BaseListProxy": BaseListProxy,
    "ListProxy": ListProxy,
    "DictProxy": DictProxy,
    "ArrayProxy": ArrayProxy,
    "PoolProxy": PoolProxy,
}


def _reduce_proxy_for_wire(proxy: BaseProxy) -> tuple[Any, ...]:
    _, (func, token, serializer, kwds) = proxy.__reduce__()
    session = context.session
    if session is not None and same_address(session.address, token.address):
        session.take_reference(token.id)
        kwds = {**kwds, "distproc_adopt": True}
    return wire_global(RebuildProxy), (wire_global(func), token, serializer, kwds)


register_pickle_reducer(BaseProxy, _reduce_proxy_for_wire)
for _name, _ours in WIRE_NAMES.items():
    register_wire_name("multiprocessing.managers", _name, _ours)
