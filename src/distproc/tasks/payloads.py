"""What masters and workers send each other through the task service.

A function travels by reference, ``'module:qualname'``; its arguments and
its result travel as *payloads*: bytes whose first byte names the codec,
``n`` for the native codec (:mod:`distproc.wire.native`, which never
unpickles) and ``p`` for pickle.  Pickle is used only when the master chose
``serializer='pickle'``, and read only by a side that allows it: a worker
started without ``--allow-pickle`` refuses such a task, and a master that did
not choose pickle refuses a pickled result.

An exception raised by a task travels as a record: its type's reference, its
message, its args (when the native codec can carry them) and the worker's
traceback.  The master rebuilds it as the same type when that type is
already imported in the master (it never imports a module because a worker
named it), with a :class:`~distproc.errors.RemoteTraceback` as its cause.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import sys
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import RemoteError, RemoteTraceback
from ..wire.native import NativeCodec

__all__ = [
    "MAIN_PATH",
    "NATIVE",
    "PICKLE",
    "PICKLED_CALLABLE",
    "PickleRefused",
    "decode",
    "describe_exception",
    "encode",
    "error_record",
    "function_ref",
    "rebuild_error",
    "resolve",
]

NATIVE, PICKLE = b"n", b"p"
#: The function reference of a task whose callable travels pickled with its arguments.
PICKLED_CALLABLE = "<pickled callable>"

#: In a worker that an Executor started: the master's script, loaded as
#: ``__distproc_main__`` the first time a task names a function of ``__main__``.
MAIN_PATH: str | None = None
_native = NativeCodec()


class PickleRefused(ValueError):
    """A pickled payload reached a side that does not allow pickle."""


def encode(value: Any, codec: bytes) -> bytes:
    if codec == PICKLE:
        return PICKLE + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return NATIVE + _native.dumps(value)


def decode(payload: bytes, allow_pickle: bool) -> Any:
    tag = payload[:1]
    if tag == NATIVE:
        return _native.loads(memoryview(payload)[1:])
    if tag == PICKLE:
        if not allow_pickle:
            raise PickleRefused(
                "a pickled payload was refused: this side does not allow pickle "
                "(masters: serializer='pickle'; workers: --allow-pickle)"
            )
        return pickle.loads(memoryview(payload)[1:])
    raise ValueError(f"unknown payload codec {tag!r}")


def is_bound_method(fn: Any) -> bool:
    """Whether ``fn`` is a method bound to an instance: its name leads to the function
    without the instance.  (A classmethod is bound to its class, which the name finds.)"""
    return inspect.ismethod(fn) and not isinstance(fn.__self__, type)


def function_ref(fn: Callable[..., Any]) -> str:
    """``'module:qualname'`` of an importable function, or a :class:`TypeError` saying why not."""
    if is_bound_method(fn):
        raise TypeError(
            f"{fn!r} is bound to an object, and a task names its function by "
            "'module:qualname', which would call it without that object"
        )
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not callable(fn) or not isinstance(module, str) or not isinstance(qualname, str):
        raise TypeError(
            f"{fn!r} cannot be sent to a worker: tasks name their function by "
            "'module:qualname'; pass a function defined at the top level of a module"
        )
    if "<lambda>" in qualname or "<locals>" in qualname:
        what = "a lambda" if "<lambda>" in qualname else "a function defined inside another"
        raise TypeError(
            f"{module}.{qualname} is {what}: workers import a task's function by name, "
            "so define it with def at the top level of a module that workers can import"
        )
    try:
        found = resolve(f"{module}:{qualname}", import_modules=False)
    except (ImportError, AttributeError):
        found = None
    if found is not fn and getattr(found, "__func__", found) is not getattr(fn, "__func__", fn):
        raise TypeError(
            f"{module}.{qualname} cannot be found under its own name, so workers could "
            "not import it; define it at the top level of its module"
        )
    return f"{module}:{qualname}"


def resolve(ref: str, *, import_modules: bool = True) -> Any:
    """The object named by ``'module:qualname'``."""
    module_name, colon, qualname = ref.partition(":")
    if not colon or not module_name or not qualname:
        raise ValueError(f"bad function reference {ref!r}: expected 'module:qualname'")
    if module_name == "__main__" and import_modules and MAIN_PATH:
        _load_main(MAIN_PATH)
    if module_name == "__main__" and "__distproc_main__" in sys.modules:
        module_name = "__distproc_main__"  # a worker that loaded the master's script
    module = sys.modules.get(module_name)
    if module_name == "__main__" and import_modules:
        raise ImportError(
            f"{qualname} is defined in the master's __main__ script, which only the workers "
            "that the Executor starts itself can load; put it in a module that workers import"
        )
    if module is None:
        if not import_modules:
            raise ImportError(f"module {module_name!r} is not imported")
        module = importlib.import_module(module_name)
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _load_main(path: str) -> None:
    """Run the master's script as ``__distproc_main__``, as multiprocessing's spawn does."""
    if "__distproc_main__" in sys.modules:
        return
    module = types.ModuleType("__distproc_main__")
    module.__file__ = path
    sys.modules["__distproc_main__"] = module
    try:
        exec(compile(Path(path).read_bytes(), path, "exec"), module.__dict__)
    except BaseException:
        del sys.modules["__distproc_main__"]
        raise


def describe_exception(exc: BaseException) -> str:
    """``Type: message (file:line)``: an exception raised by imported code, on one line."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}:{exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    # The frame in the user's code, not in importlib's machinery.
    user = [f for f in frames if "importlib" not in f.filename and f.filename != __file__]
    where = f" ({user[-1].filename}:{user[-1].lineno})" if user else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _type_ref(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def error_record(exc: BaseException) -> dict[str, Any]:
    """What a worker sends back for an exception its task raised."""
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {type(exc).__name__}>"
    record: dict[str, Any] = {
        "type": _type_ref(type(exc)),
        "message": message,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "args": None,
    }
    try:
        _native.dumps(list(exc.args))
        record["args"] = list(exc.args)
    except Exception:
        pass
    return record


def rebuild_error(record: Any) -> BaseException:
    """The exception a worker reported, as the same type where the master knows it."""
    if not isinstance(record, dict):
        return RemoteError(f"malformed error record: {record!r}")
    name = str(record.get("type", "?"))
    message = str(record.get("message", ""))
    tb = str(record.get("traceback", ""))
    args = record.get("args")
    exc: BaseException | None = None
    try:
        cls = resolve(name, import_modules=False)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            exc = cls(*args) if isinstance(args, list) else cls(message)
    except Exception:
        exc = None
    if exc is None:
        shown = name.replace(":", ".")
        exc = RemoteError(f"{shown}: {message}\n\n{tb}" if tb else f"{shown}: {message}")
    exc.__cause__ = RemoteTraceback(tb)
    return exc
