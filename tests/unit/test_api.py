"""The public surface: every name of multiprocessing.managers, same signatures."""

from __future__ import annotations

import inspect
import multiprocessing.managers
import sys
import types
from typing import Any

import distproc
import distproc.managers as ours

stdlib: Any = multiprocessing.managers  # typeshed lacks several of its names

#: Names of the stdlib module that are imports there, not part of its API.
_IMPORTED_THERE = {"format_exc", "get_context", "get_spawning_popen", "getpid", "ProcessError"}


def _public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name in dir(module)
        if not name.startswith("_") and not isinstance(getattr(module, name), types.ModuleType)
    }


def test_every_stdlib_name_exists() -> None:
    missing = _public_names(stdlib) - _public_names(ours) - {"view_type"}
    assert missing == set()


def test_all_matches_the_stdlib() -> None:
    assert sorted(ours.__all__) == sorted(stdlib.__all__)


def test_package_all_is_exact() -> None:
    exported = {name for name in dir(distproc) if not name.startswith("_")}
    modules = {name for name in exported if isinstance(getattr(distproc, name), types.ModuleType)}
    assert set(distproc.__all__) - {"__version__"} == exported - modules
    for name in distproc.__all__:
        assert hasattr(distproc, name)


def _params(obj: object) -> list[tuple[str, object, object]]:
    sig = inspect.signature(obj)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def test_signatures_match() -> None:
    pairs = [
        ("BaseManager.register", ours.BaseManager.register, stdlib.BaseManager.register),
        ("BaseManager.start", ours.BaseManager.start, stdlib.BaseManager.start),
        ("BaseManager.connect", ours.BaseManager.connect, stdlib.BaseManager.connect),
        ("BaseManager.join", ours.BaseManager.join, stdlib.BaseManager.join),
        ("BaseProxy._callmethod", ours.BaseProxy._callmethod, stdlib.BaseProxy._callmethod),
        ("BaseProxy.__init__", ours.BaseProxy.__init__, stdlib.BaseProxy.__init__),
        ("AutoProxy", ours.AutoProxy, stdlib.AutoProxy),
        ("RebuildProxy", ours.RebuildProxy, stdlib.RebuildProxy),
        ("Token.__init__", ours.Token.__init__, stdlib.Token.__init__),
    ]
    for name, mine, theirs in pairs:
        mine_params = [(n, k) for n, k, _ in _params(mine)]
        their_params = [(n, k) for n, k, _ in _params(theirs)]
        assert mine_params == their_params, name
    # distproc's own keyword-only arguments, after the stdlib's.
    init = [p for p in _params(ours.BaseManager.__init__) if p[0] not in ("config", "tls")]
    if sys.version_info < (
        3,
        11,
    ):  # the stdlib's shutdown_timeout came in 3.11; ours is always there
        init = [p for p in init if p[0] != "shutdown_timeout"]
    assert [(n, k) for n, k, _ in init] == [
        (n, k) for n, k, _ in _params(stdlib.BaseManager.__init__)
    ]


def test_sync_manager_has_every_type() -> None:
    for typeid in stdlib.SyncManager._registry:
        assert typeid in ours.SyncManager._registry
        if typeid not in ("Iterator", "AsyncResult"):
            assert callable(getattr(ours.SyncManager, typeid))


def test_exception_tree() -> None:
    import multiprocessing

    assert issubclass(distproc.AuthenticationError, multiprocessing.AuthenticationError)
    assert issubclass(distproc.RemoteError, stdlib.RemoteError)
    assert issubclass(distproc.ConnectionLostError, ConnectionError)
    assert issubclass(distproc.ConnectionLostError, EOFError)
    for name in ("AuthenticationError", "RemoteError", "ConnectionLostError", "StartError"):
        assert issubclass(getattr(distproc, name), distproc.DistprocError)
