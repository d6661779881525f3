"""Proxies on the wire under the stdlib's names, so that stdlib peers can load them.

A pickled proxy names its rebuild function and its class.  Those are written
as ``multiprocessing.managers.RebuildProxy`` and the stdlib's proxy classes,
which a stdlib peer has, and the same names are read back as distproc's
(see :func:`distproc.wire.codecs.register_pickle_alias`).  A proxy pickled
into a native reply also has its reference taken for the client by the
session that sends it (see :mod:`.rebuild`).  Importing this module
registers it all with the pickle codec.
"""

from __future__ import annotations

import multiprocessing.managers
from typing import Any

from ..callcontext import context
from ..wire.codecs import register_pickle_alias, register_pickle_reducer
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

__all__ = ["STDLIB_EQUIVALENT"]

_mp: Any = multiprocessing.managers  # typeshed lacks most of its proxy names

STDLIB_EQUIVALENT: dict[Any, Any] = {
    AutoProxy: _mp.AutoProxy,
    IteratorProxy: _mp.IteratorProxy,
    AcquirerProxy: _mp.AcquirerProxy,
    ConditionProxy: _mp.ConditionProxy,
    EventProxy: _mp.EventProxy,
    BarrierProxy: _mp.BarrierProxy,
    NamespaceProxy: _mp.NamespaceProxy,
    ValueProxy: _mp.ValueProxy,
    BaseListProxy: _mp.BaseListProxy,
    ListProxy: _mp.ListProxy,
    DictProxy: _mp.DictProxy,
    ArrayProxy: _mp.ArrayProxy,
    PoolProxy: _mp.PoolProxy,
}


def _reduce_proxy_for_wire(proxy: BaseProxy) -> tuple[Any, ...]:
    _, (func, token, serializer, kwds) = proxy.__reduce__()
    session = context.session
    if session is not None and same_address(session.address, token.address):
        session.take_reference(token.id)
        kwds = {**kwds, "distproc_adopt": True}
    return _mp.RebuildProxy, (STDLIB_EQUIVALENT.get(func, func), token, serializer, kwds)


register_pickle_reducer(BaseProxy, _reduce_proxy_for_wire)
register_pickle_alias("multiprocessing.managers", "RebuildProxy", RebuildProxy)
for _ours, _theirs in STDLIB_EQUIVALENT.items():
    register_pickle_alias("multiprocessing.managers", _theirs.__qualname__, _ours)
