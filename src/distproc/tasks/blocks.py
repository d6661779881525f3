"""A block of ``distproc map``: raw input lines in, their JSON output lines out, on a worker.

A *block* is a run of whole input lines, as bytes, cut from the input by the
master without looking inside a line (:mod:`.blockmap`).  The worker that
leases it splits it into lines, reads each non-blank line as JSON
(:mod:`.jsonlines`), calls the function and writes each result as one JSON
line into one buffer; a line that is not JSON, a call that raises and a
result that is not JSON each write an error record in their place, with the
input line number (the block's first line number plus the line's place in
the block, blank lines counted).  So the master never parses a line, and
the output of a block is written with one ``write``.

The buffer never grows past ``limit`` bytes (what fits in one frame back to
the service): the worker stops before the line that would pass it and says
how many input bytes it consumed; the master sends the rest again as a block
of its own.  A single line whose output alone is too large gets an error
record instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from .jsonlines import (
    EXACT_FROM,
    OPTIONS,
    InputError,
    dumps_line,
    error_line,
    exception_line,
    loads_line,
    needs_exact,
    not_array,
)

__all__ = ["BLOCK_OPTION", "run_block", "split_lines"]

#: The task option that tells a worker that a task is a block.
BLOCK_OPTION = "block"
#: Results whose line holds no float: no ``null`` in it can stand for a NaN.
_NO_FLOATS = (int, str, bool, type(None))


def run_block(
    fn: Callable[..., Any], data: bytes, first_line: int, star: bool, records: bool, limit: int
) -> list[Any]:
    """``[seconds, output, failed, consumed]`` for the lines of ``data``.

    ``output`` holds one line per non-blank input line, ``failed`` counts
    its error records, and ``consumed`` is how many bytes of ``data`` it
    covers (``len(data)`` unless ``limit`` was reached first).  The loop
    does the common case (a JSON line, a call that returns, a result orjson
    writes as it is) inline; anything else goes through :mod:`.jsonlines`.
    """
    started = time.perf_counter()
    out = bytearray()
    size = failed = 0
    loads, dumps, options = orjson.loads, orjson.dumps, OPTIONS
    lines = data.split(b"\n")
    consumed = len(data)
    for index, raw in enumerate(lines):
        if not raw or raw.isspace():
            continue
        line = b""
        bad = 0
        try:
            value = loads(raw)
            if len(raw) >= EXACT_FROM and needs_exact(raw):
                value = loads_line(raw, first_line + index, star)
            elif star and not isinstance(value, list):
                raise InputError(not_array(value, first_line + index))
        except (ValueError, InputError):
            try:
                value = loads_line(raw, first_line + index, star)
            except InputError as exc:
                line = error_line("InputError", str(exc), first_line + index)
                bad = 1
        if not line:
            try:
                result = fn(*value) if star else fn(value)
            except Exception as exc:
                line = exception_line(exc, first_line + index)
                bad = 1
            else:
                if records:
                    result = {"result": result}
                try:
                    line = dumps(result, option=options)
                    # orjson writes NaN and infinities as null: those are refused.
                    if type(result) is not int and b"null" in line:
                        line = dumps_line(result)
                except (TypeError, ValueError):
                    line, bad = _not_orjsons(result, first_line + index)
        n = len(line)
        if size + n > limit:
            if n > limit:
                line = error_line("distproc.errors.FrameTooLargeError", _too_large(n, limit),
                                  first_line + index)  # fmt: skip
                n, bad = len(line), 1
            if size and size + n > limit:
                # This line and the rest go back to the master, which sends them again.
                consumed = sum(len(raw) + 1 for raw in lines[:index])
                break
        out += line
        size += n
        failed += bad
    return [time.perf_counter() - started, bytes(out), failed, consumed]


def _not_orjsons(result: Any, number: int) -> tuple[bytes, int]:
    """The line of a result that orjson does not write as it is: (line, failed)."""
    try:
        return dumps_line(result), 0  # ints beyond 64 bits
    except (TypeError, ValueError) as exc:
        return error_line("TypeError", f"the result is not JSON: {exc}", number), 1


def _too_large(size: int, limit: int) -> str:
    return (
        f"the result takes {size:,} bytes as a JSON line; a result can take at most "
        f"{limit:,} (the frame limit, less room for its envelope): return large data "
        "another way, such as a path or URL"
    )


def split_lines(data: bytes) -> tuple[bytes, bytes]:
    """``data`` (two lines or more) cut at the line boundary nearest its middle."""
    middle = len(data) // 2
    cut = data.rfind(b"\n", 0, middle)
    if cut < 0 or cut == len(data) - 1:
        cut = data.find(b"\n", middle)
    if cut < 0 or cut == len(data) - 1:
        return data, b""
    return data[: cut + 1], data[cut + 1 :]
