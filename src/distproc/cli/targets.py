"""``MODULE:NAME`` on the command line: import the module as ``python -m`` would, find NAME.

Mistakes get a usage error that says what to give: a file name instead of a
module, a module that does not import, a name that is not there (with the
names that would do).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..tasks.payloads import describe_exception
from .errors import CliError, CliUsageError

__all__ = ["load_attribute"]


def _import_module(name: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` does
    try:
        return importlib.import_module(name)
    except Exception as exc:
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing and (missing == name or name.startswith(missing + ".")):
            raise CliUsageError(
                f"cannot import {name!r}: no module named {missing!r} "
                f"in the current directory ({cwd}) or on sys.path"
            ) from None
        raise CliError(f"importing {name!r} failed: {describe_exception(exc)}") from None


def load_attribute(
    target: str,
    *,
    noun: str,
    form: str,
    example: str,
    missing: str,
    listed: str,
    wanted: Callable[[str, Any], bool],
    limit: int | None = None,
) -> Any:
    """The object that ``MODULE:NAME`` names, or a usage error that says what to give.

    ``noun`` and ``form`` name what was expected (``"function"``,
    ``"MODULE:FUNCTION"``); when NAME is not there, the error lists the
    module's members that ``wanted(name, value)`` accepts, as ``listed``.
    """
    module_name, colon, attr = target.partition(":")
    if not colon or not module_name or not attr:
        raise CliUsageError(f"bad {noun} {target!r}: expected {form}, e.g. {example}")
    if module_name.endswith(".py") or "/" in module_name:
        stem = Path(module_name).stem
        raise CliUsageError(f"bad {noun} {target!r}: give a module name, not a file: {stem}:{attr}")
    module = _import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            found = sorted(name for name, value in vars(module).items() if wanted(name, value))
            known = f"; {listed}: {', '.join(found[:limit])}" if found else ""
            raise CliUsageError(
                f"module {module_name!r} has no {missing} {attr!r}{known}"
            ) from None
    return obj
