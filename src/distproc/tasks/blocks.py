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

from .jsonlines import InputError, dumps_line, error_line, exception_line, loads_line

__all__ = ["BLOCK_OPTION", "run_block", "split_lines"]

#: The task option that tells a worker that a task is a block.
BLOCK_OPTION = "block"


def run_block(
    fn: Callable[..., Any], data: bytes, first_line: int, star: bool, records: bool, limit: int
) -> list[Any]:
    """``[seconds, output, failed, consumed]`` for the lines of ``data``.

    ``output`` holds one line per non-blank input line, ``failed`` counts
    its error records, and ``consumed`` is how many bytes of ``data`` it
    covers (``len(data)`` unless ``limit`` was reached first).
    """
    started = time.perf_counter()
    out = bytearray()
    failed = 0
    number = first_line - 1
    consumed = 0
    for raw in data.split(b"\n"):
        number += 1
        if not raw.strip():
            consumed += len(raw) + 1
            continue
        bad = 1
        try:
            value = loads_line(raw, number, star)
        except InputError as exc:
            line = error_line("InputError", str(exc), number)
        else:
            try:
                result = fn(*value) if star else fn(value)
            except Exception as exc:
                line = exception_line(exc, number)
            else:
                try:
                    line = dumps_line({"result": result} if records else result)
                    bad = 0
                except (TypeError, ValueError) as exc:
                    line = error_line("TypeError", f"the result is not JSON: {exc}", number)
        if len(line) > limit:
            line = error_line("distproc.errors.FrameTooLargeError", _too_large(len(line), limit),
                              number)  # fmt: skip
            bad = 1
        if out and len(out) + len(line) > limit:
            break  # this line and the rest go back to the master, which sends them again
        out += line
        failed += bad
        consumed += len(raw) + 1
    return [time.perf_counter() - started, bytes(out), failed, min(consumed, len(data))]


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
