"""Proxies: the client-side handles of shared objects, as ``multiprocessing.managers`` has them.

* :mod:`.base`: :class:`BaseProxy` (connections, calls, references,
  pickling), :func:`AutoProxy`, :func:`MakeProxyType`, :func:`RebuildProxy`;
* :mod:`.rebuild`: what a proxy rebuilt from a message borrows from it;
* :mod:`.typed`: the typed proxies (``ListProxy``, ``EventProxy``...);
* :mod:`.wire_names`: proxies written under the stdlib's names on the wire.
"""

from . import wire_names  # noqa: F401  (registers the stdlib's names with the pickle codec)
from .base import (
    AutoProxy,
    BaseProxy,
    MakeProxyType,
    ProcessLocalSet,
    ProxyManager,
    RebuildProxy,
    adopt_proxy,
    client_factory,
)
from .typed import (
    AcquirerProxy,
    ArrayProxy,
    BarrierProxy,
    BaseListProxy,
    BasePoolProxy,
    ConditionProxy,
    DictProxy,
    EventProxy,
    IteratorProxy,
    ListProxy,
    NamespaceProxy,
    PoolProxy,
    ValueProxy,
)

__all__ = [
    "AcquirerProxy",
    "ArrayProxy",
    "AutoProxy",
    "BarrierProxy",
    "BaseListProxy",
    "BasePoolProxy",
    "BaseProxy",
    "ConditionProxy",
    "DictProxy",
    "EventProxy",
    "IteratorProxy",
    "ListProxy",
    "MakeProxyType",
    "NamespaceProxy",
    "PoolProxy",
    "ProcessLocalSet",
    "ProxyManager",
    "RebuildProxy",
    "ValueProxy",
    "adopt_proxy",
    "client_factory",
]
