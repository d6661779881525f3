"""``distproc.install()``: the stdlib's ``multiprocessing.managers`` becomes distproc.

Code that never names distproc (it calls ``multiprocessing.Manager()``, or a
library imports ``multiprocessing.managers``) runs on distproc after one call
at the top of the program, or under ``python -m distproc.run script.py``:

* ``sys.modules['multiprocessing.managers']`` and the ``managers`` attribute of
  the ``multiprocessing`` package are :mod:`distproc.managers`, so every
  ``import multiprocessing.managers`` and ``from multiprocessing.managers
  import ...`` made afterwards gets distproc's names;
* ``multiprocessing.Manager()`` and each context's ``.Manager()`` need nothing
  more: the stdlib's ``BaseContext.Manager`` imports ``SyncManager`` from
  ``multiprocessing.managers`` each time it is called;
* child processes run on distproc too.  A forked child inherits the modules
  of its parent.  A spawned child (``spawn``, and each child of the
  ``forkserver``) is a fresh interpreter: it learns that it must install from
  the *preparation data* that multiprocessing sends every such child before
  anything else (its authkey, ``sys.path``, the start method).  While
  installed, that data carries one more entry, which unpickles by calling
  :func:`install` in the child.  It is loaded before the child re-imports the
  parent's main module and before it unpickles its process object, so the
  user's module sees distproc there as it did in the parent.

Why the preparation data, and not an environment variable or a startup hook:
it goes exactly where multiprocessing's own process state goes (children and
their children, started by any context), never to unrelated interpreters that
the program runs with ``subprocess``; it acts before the child imports
anything of the user's, which an environment variable could only do through
a ``.pth`` file run at the start of every interpreter of the environment; and
:func:`uninstall` stops it for children started afterwards.  The child must
be able to import distproc from its start (installed in the environment, or
on ``PYTHONPATH``): the entry is loaded before the parent's ``sys.path`` is
applied.

What distproc pickles keeps the stdlib's names, so that it loads in a stdlib
peer on another machine, and what a stdlib peer pickles loads here as
distproc's objects.  A pickled global names its object by ``__module__`` and
``__qualname__``, and pickle checks that the name leads back to the very
object written.  While installed, ``multiprocessing.managers.Token`` (and
each other name of :func:`~distproc.wire.codecs.wire_names`) is distproc's
object, so :func:`install` gives each of those objects the ``__module__``
``multiprocessing.managers`` and :func:`uninstall` gives it back its own; the
reducers write whatever the name leads to (see
:func:`~distproc.wire.codecs.wire_global`).  The bytes on the wire are the
same installed or not.

Names already bound stay what they were: a module that ran ``from
multiprocessing.managers import BaseManager`` before :func:`install` keeps
the stdlib's class.  Call it first, or use ``python -m distproc.run``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.managers
import multiprocessing.spawn
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from .wire.codecs import wire_names

__all__ = ["install", "installed", "uninstall"]

MODULE = "multiprocessing.managers"

#: The stdlib's module, as imported before anything replaced it.
STDLIB_MANAGERS: types.ModuleType = sys.modules[MODULE]

#: ``multiprocessing.spawn``, whose ``get_preparation_data`` is wrapped while installed.
_spawn: Any = multiprocessing.spawn
_lock = threading.RLock()
#: The stdlib's ``get_preparation_data`` while installed, else ``None``.
_saved_preparation_data: Callable[[str], dict[str, Any]] | None = None
#: While installed: each object given the stdlib's ``__module__``, with its own.
_own_modules: dict[Any, str] = {}


class _InstallInChild:
    """An entry of the spawn preparation data: unpickling it installs distproc."""

    def __reduce__(self) -> tuple[Any, ...]:
        return install, ()


def _preparation_data(name: str) -> dict[str, Any]:
    """The stdlib's preparation data for a spawned child, plus the entry that installs."""
    assert _saved_preparation_data is not None
    data = _saved_preparation_data(name)
    data["distproc_install"] = _InstallInChild()
    return data


def install() -> None:
    """Make ``multiprocessing.managers`` (and ``multiprocessing.Manager()``) distproc's.

    Here and in every child process started afterwards, by any start method.
    Calling it again does nothing; :func:`uninstall` undoes it.
    """
    global _saved_preparation_data
    from . import managers

    with _lock:
        if _saved_preparation_data is None:
            _saved_preparation_data = _spawn.get_preparation_data
            _spawn.get_preparation_data = _preparation_data
        for obj in wire_names(MODULE).values():
            if obj not in _own_modules:
                _own_modules[obj] = obj.__module__
                obj.__module__ = MODULE
        sys.modules[MODULE] = managers
        multiprocessing.managers = managers


def uninstall() -> None:
    """Give ``multiprocessing.managers`` back to the stdlib, here and for later children.

    Objects made while installed stay distproc's.  Calling it when not
    installed does nothing.
    """
    global _saved_preparation_data
    with _lock:
        if _saved_preparation_data is not None:
            _spawn.get_preparation_data = _saved_preparation_data
            _saved_preparation_data = None
        sys.modules[MODULE] = STDLIB_MANAGERS
        multiprocessing.managers = STDLIB_MANAGERS
        for obj, module in _own_modules.items():
            obj.__module__ = module
        _own_modules.clear()


def installed() -> bool:
    """Whether ``multiprocessing.managers`` is distproc's in this process."""
    from . import managers

    return sys.modules.get(MODULE) is managers
