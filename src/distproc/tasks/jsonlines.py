"""The JSON lines of ``distproc map``: how an input line is read, how a result is written.

One form, kept stable, whichever process writes it (a local worker, a remote
one, the master for a line it could not send):

* a result is one line of compact JSON as orjson writes it with
  ``OPT_NON_STR_KEYS``: no spaces, UTF-8 text (no ``\\u`` escapes), dict keys
  in their order (int, float, bool and None keys as the ``json`` module turns
  them into strings), floats in the shortest form that reads back to the
  same float (``1e-7``, ``0.00001``);
* integers beyond 64 bits, which orjson does not write, are written in full
  in the same form by :func:`_fallback` (every other value still through
  orjson), so the form never depends on the path taken;
* NaN and infinities are refused, as ``json.dumps(allow_nan=False)`` does
  (orjson would write ``null``); so are types the ``json`` module refuses
  (dataclasses, datetimes, sets, bytes, a lone surrogate in a str).  orjson
  always writes a ``uuid.UUID`` (its text) and an ``enum.Enum`` (its value):
  the one widening over the ``json`` module;
* error records are the same form: ``{"error":{"type":...,"message":...,
  "traceback":...,"line":N}}``.

An input line is read by orjson, which refuses what is not JSON (``NaN``,
``Infinity``, ``1e400``, a lone surrogate escape).  A line with a run of 20
or more digits may hold an integer beyond 64 bits, which orjson would read as
a float: such a line is read by the ``json`` module, exactly (and just as
strictly).  A line that is not UTF-8 gets an error record that says where.
"""

from __future__ import annotations

import json
import math
import re
import traceback
from typing import Any

import orjson

__all__ = [
    "EXACT_FROM",
    "OPTIONS",
    "InputError",
    "dumps_line",
    "error_line",
    "exception_line",
    "loads_line",
    "needs_exact",
    "not_array",
    "type_name",
]

#: orjson's options for an output line (with its newline).
OPTIONS = _OPTIONS = (
    orjson.OPT_NON_STR_KEYS
    | orjson.OPT_APPEND_NEWLINE
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)
#: A line this long or longer may hold an int beyond 64 bits (20 digits or more).
EXACT_FROM = 20
_DIGITS = re.compile(rb"\d{%d}" % EXACT_FROM)

def needs_exact(raw: bytes) -> bool:
    """Whether ``raw`` may hold an int that orjson would read as a float."""
    return _DIGITS.search(raw) is not None
_MAX_DEPTH = 254  # orjson's own limit of nesting


class InputError(ValueError):
    """An input line that cannot be a call; ``str()`` says why, naming the line."""


def type_name(cls: type) -> str:
    """``ValueError`` for a builtin, ``package.module.Name`` otherwise."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def error_line(kind: str, message: str, line: int, tb: str | None = None) -> bytes:
    """An error record as one output line (with its newline)."""
    record = {"error": {"type": kind, "message": message, "traceback": tb, "line": line}}
    return orjson.dumps(record, option=_OPTIONS)


def exception_line(exc: BaseException, line: int) -> bytes:
    """The error record of an exception raised by a call, with its traceback."""
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {type(exc).__name__}>"
    frames = exc.__traceback__
    if frames is not None and frames.tb_next is not None:
        frames = frames.tb_next  # from the function called on, not the loop that called it
    tb = "".join(traceback.format_exception(type(exc), exc, frames))
    return error_line(type_name(type(exc)), message, line, tb)


def loads_line(raw: bytes, number: int, star: bool) -> Any:
    """The call arguments of input line ``number``, or :class:`InputError`."""
    try:
        value = orjson.loads(raw)
        if len(raw) >= EXACT_FROM and needs_exact(raw):
            value = json.loads(raw)  # an integer beyond 64 bits stays exact
    except ValueError as exc:
        raise InputError(_not_json(raw, number, exc)) from None
    if star and not isinstance(value, list):
        raise InputError(not_array(value, number))
    return value


def not_array(value: Any, number: int) -> str:
    """Why line ``number``, ``value``, is no call under ``--star``."""
    return (
        f"input line {number} is a JSON {_json_kind(value)}; "
        "--star takes a JSON array of arguments on each line"
    )


def _not_json(raw: bytes, number: int, exc: ValueError) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return (
            f"input line {number} is not UTF-8 (byte {raw[bad.start]:#04x} at position "
            f"{bad.start}): JSON lines are UTF-8 text"
        )
    return f"input line {number} is not JSON: {exc}"


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    return "number"


def dumps_line(value: Any) -> bytes:
    """``value`` as one output line (with its newline); ``TypeError``/``ValueError`` if not JSON."""
    try:
        out = orjson.dumps(value, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise TypeError(str(exc)) from None
        out = _fallback(value, 0).encode("utf-8") + b"\n"
    if b"null" in out and _non_finite(value, 0):
        raise ValueError("Out of range float values are not JSON compliant")
    return out


def _fallback(value: Any, depth: int) -> str:
    """``value`` in the form of :func:`dumps_line`, for values that hold huge ints."""
    if depth > _MAX_DEPTH:
        raise TypeError("Recursion limit reached")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, dict):
        items = (f"{_key(k)}:{_fallback(v, depth + 1)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fallback(v, depth + 1) for v in value) + "]"
    try:
        return orjson.dumps(value, option=_OPTIONS & ~orjson.OPT_APPEND_NEWLINE).decode("utf-8")
    except orjson.JSONEncodeError as exc:
        raise TypeError(str(exc)) from None


def _key(key: Any) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return f'"{int(key)}"'
    try:  # orjson's way with every other key: '{KEY:0}' less its braces and value
        return orjson.dumps({key: 0}, option=orjson.OPT_NON_STR_KEYS)[1:-3].decode("utf-8")
    except orjson.JSONEncodeError as exc:
        raise TypeError(str(exc)) from None


def _non_finite(value: Any, depth: int) -> bool:
    """Whether ``value`` holds a NaN or an infinity (orjson writes them as ``null``)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return any(_non_finite(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v, depth + 1) for v in value)
    return False
