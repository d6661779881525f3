"""What a worker may run: :class:`AllowList`.

A task names its function (``'module:qualname'``), and with the authkey
anyone can send a task.  Were every importable function allowed, the authkey
would run ``os:system`` on every worker.  So a ``distproc worker`` runs, by
default, only *the tasks' own code*: modules that it finds under its
directory or a ``--path`` directory, and nothing from the standard library or
site-packages (even where those lie under that directory, as a ``.venv``
does).  More is allowed by name only: ``--allow MODULE`` (that module and its
submodules) or ``--allow MODULE:FUNCTION`` (that function).

The check runs *before* anything is imported: where a module would come
from is asked of the import system (``importlib.util.find_spec`` of the
top-level package, which imports nothing), or read from ``sys.modules`` when
it is imported already (a module of the same name in the worker's directory
does not make the standard library's one allowed).  A refused function
fails with a message that says how to allow it.  Once an allowed module is
imported, what its name reaches is checked too (:meth:`AllowList.check_resolved`):
``mytasks:os.system``, or a ``system`` that ``mytasks`` imported from ``os``,
is the standard library's function under the tasks' name, and is refused.

The workers that an Executor or ``distproc map`` starts for itself trust their
own master (:meth:`AllowList.trust_all`), so that code written for
``ProcessPoolExecutor`` that submits ``pow`` or ``str`` runs there as it did.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import site
import sys
import sysconfig
import types
from collections.abc import Iterable
from pathlib import Path

__all__ = ["AllowList", "NotAllowedError"]


class NotAllowedError(ImportError):
    """A task's function is not allowed on this worker (nothing was imported)."""


def _installed_dirs() -> list[Path]:
    """Where the standard library and installed packages live."""
    found: set[str] = set()
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        with contextlib.suppress(Exception):
            found.add(sysconfig.get_path(name))
    with contextlib.suppress(Exception):
        found.update(site.getsitepackages())
    with contextlib.suppress(Exception):
        found.add(site.getusersitepackages())
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        found.add(os.path.join(prefix, "lib"))
    return [Path(p).resolve() for p in found if p]


def _inside(path: Path, dirs: Iterable[Path]) -> bool:
    return any(path == d or d in path.parents for d in dirs)


class AllowList:
    """The functions a worker may run (see the module docstring).

    ``roots``: the directories whose modules are the tasks' own code (the
    worker's directory and its ``--path``); ``allow``: ``MODULE`` or
    ``MODULE:FUNCTION`` entries allowed besides.
    """

    def __init__(self, roots: Iterable[str | os.PathLike[str]], allow: Iterable[str] = ()) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        self.modules: set[str] = set()
        self.functions: set[str] = set()
        for entry in allow:
            module, colon, function = entry.partition(":")
            if not module or (colon and not function):
                raise ValueError(f"bad --allow {entry!r}: expected MODULE or MODULE:FUNCTION")
            (self.functions if colon else self.modules).add(entry)
        self._trust_all = False
        self._installed = _installed_dirs()
        #: Top-level modules already judged: name -> whether they are the tasks' own code.
        self._judged: dict[str, bool] = {}

    @classmethod
    def trust_all(cls) -> AllowList:
        """Everything is allowed: a worker that its own master started."""
        allowed = cls(())
        allowed._trust_all = True
        return allowed

    def check(self, ref: str) -> None:
        """Return if the function ``ref`` (``'module:qualname'``) may run here, else
        raise :class:`NotAllowedError` saying how to allow it.  Imports nothing."""
        if self._trust_all:
            return
        module, _, _ = ref.partition(":")
        if ref in self.functions or any(
            module == m or module.startswith(m + ".") for m in self.modules
        ):
            return
        top = module.split(".")[0]
        if top in ("__main__", "__distproc_main__") or (top != "distproc" and self._own_code(top)):
            return
        raise self._refusal(ref, ref)

    def check_resolved(self, ref: str, obj: object) -> None:
        """Raise :class:`NotAllowedError` if ``obj``, what an allowed ``ref`` resolved to,
        is another module's function reached through the tasks' module (an attribute
        that is a module, or a function imported into it)."""
        if self._trust_all or ref in self.functions:
            return
        module, _, qualname = ref.partition(":")
        parent: object = sys.modules.get(module)
        for part in qualname.split(".")[:-1]:
            parent = getattr(parent, part, None)
            if isinstance(parent, types.ModuleType):
                raise self._refusal(ref, f"{parent.__name__}:{qualname.split('.')[-1]}")
        home = getattr(obj, "__module__", None)
        if not isinstance(home, str) or home == module:
            return
        name = getattr(obj, "__qualname__", None)
        real = f"{home}:{name}" if isinstance(name, str) else f"{home}:{qualname}"
        try:
            self.check(real)
        except NotAllowedError:
            raise self._refusal(ref, real) from None

    def _refusal(self, ref: str, real: str) -> NotAllowedError:
        where = " and ".join(str(r) for r in self.roots) or "no directory"
        module = real.partition(":")[0]
        through = "" if real == ref else f" (it is {real})"
        return NotAllowedError(
            f"{ref} is not allowed on this worker{through}: it runs only the tasks' own "
            f"modules (from {where}), not the standard library or installed packages; "
            f"start it with --allow {real} (or --allow {module}) to allow it"
        )

    def _own_code(self, top: str) -> bool:
        if top not in self._judged:
            self._judged[top] = self._judge(top)
        return self._judged[top]

    def _judge(self, top: str) -> bool:
        """Whether module ``top`` is (or would be) imported from the tasks' own code.
        A module found nowhere passes: importing it fails with the usual error."""
        loaded = sys.modules.get(top)
        if loaded is not None:
            places = [getattr(loaded, "__file__", None)]
            places += list(getattr(loaded, "__path__", []) or [])
        else:
            try:
                spec = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                return True
            if spec is None:
                return True
            places = [spec.origin if spec.has_location else None]
            places += list(spec.submodule_search_locations or [])
        paths = [Path(p).resolve() for p in places if isinstance(p, str)]
        if not paths:
            return False  # built in, or frozen
        return all(_inside(p, self.roots) and not _inside(p, self._installed) for p in paths)
