"""The JSON lines of ``distproc map``: calls read from INPUT, results written to OUTPUT.

:class:`CallReader` turns input lines into call arguments, lazily, and notes
each line's place; :class:`ResultWriter` writes one JSON line per input line
(a result or an error record) and counts them; :class:`HeldSignals` is the
run's SIGINT/SIGTERM handler, which never cuts a line in half.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import stat
import sys
from collections.abc import Iterator
from types import FrameType
from typing import IO, Any

import click

from .errors import CliUsageError

__all__ = [
    "CallReader",
    "ErrorRecord",
    "HeldSignals",
    "ResultWriter",
    "count_calls",
    "error_record",
    "exception_record",
    "open_input",
]

#: What an input line that is not a call, or a failed call, is written as.
ErrorRecord = dict[str, Any]


def open_input(path: str) -> contextlib.AbstractContextManager[IO[bytes]]:
    if path == "-":
        if sys.stdin.isatty():
            click.echo("distproc: reading JSON lines from the terminal; end with Ctrl-D", err=True)
        try:
            # A file of our own on the same input, never closed: a run stopped while
            # its reader thread waits for input must not leave the lock of a file
            # that is closed later taken (closing sys.stdin at exit is then a
            # fatal error, and closing this one would wait forever).
            return contextlib.nullcontext(open(os.dup(sys.stdin.fileno()), "rb"))
        except (OSError, ValueError, AttributeError):  # not a real file (a test's stand-in)
            return contextlib.nullcontext(sys.stdin.buffer)
    try:
        return open(path, "rb")  # the caller's `with` closes it
    except OSError as exc:
        raise CliUsageError(f"cannot read INPUT {path!r}: {exc.strerror or exc}") from None


def count_calls(stream: IO[bytes]) -> int | None:
    """The number of non-blank lines left in ``stream`` if it is a regular file, else ``None``."""
    try:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode) or not stream.seekable():
            return None
        start = stream.tell()
        count = sum(1 for line in stream if line.strip())
        stream.seek(start)
    except (OSError, ValueError):  # no fileno (an in-memory stream), or not seekable after all
        return None
    return count


def error_record(kind: str, message: str, line: int, tb: str | None = None) -> ErrorRecord:
    return {"error": {"type": kind, "message": message, "traceback": tb, "line": line}}


def exception_record(exc: BaseException, line: int) -> ErrorRecord:
    cls = type(exc)
    kind = cls.__qualname__
    if cls.__module__ != "builtins":
        kind = f"{cls.__module__}.{kind}"
    cause = exc.__cause__
    tb = None if cause is None else getattr(cause, "tb", None) or str(cause)
    return error_record(kind, str(exc), line, tb if isinstance(tb, str) else None)


class CallReader:
    """The calls of an input stream, read as they are needed.

    Every non-blank line leaves one entry in :attr:`order`, in input order:
    ``(line number, None)`` for a call, ``(line number, error record)`` for a
    line that cannot be one.  Results come back in the order of the calls, so
    the output is the entries of :attr:`order` with the results filled in.
    """

    def __init__(self, stream: IO[bytes], star: bool) -> None:
        self.stream = stream
        self.star = star
        self.order: collections.deque[tuple[int, ErrorRecord | None]] = collections.deque()
        self.read_error: OSError | None = None

    def __iter__(self) -> Iterator[Any]:
        number = 0
        try:
            for raw in self.stream:
                number += 1
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    message = (
                        f"input line {number} is not UTF-8 (byte {raw[exc.start]:#04x} at "
                        f"position {exc.start}): JSON lines are UTF-8 text"
                    )
                    self.order.append((number, error_record("InputError", message, number)))
                    continue
                try:
                    value = json.loads(text)
                except ValueError as exc:
                    message = f"input line {number} is not JSON: {exc}"
                    self.order.append((number, error_record("InputError", message, number)))
                    continue
                if self.star and not isinstance(value, list):
                    message = (
                        f"input line {number} is a JSON {_json_kind(value)}; "
                        "--star takes a JSON array of arguments on each line"
                    )
                    self.order.append((number, error_record("InputError", message, number)))
                    continue
                self.order.append((number, None))
                yield tuple(value) if self.star else value
        except OSError as exc:  # a failing disk or pipe: stop here, say so at the end
            self.read_error = exc


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "number"


class HeldSignals:
    """The SIGINT/SIGTERM handler of a run: ``KeyboardInterrupt``, but never mid-line.

    Inside ``with stop:`` (writing one output line and counting it) a signal
    is held until the block ends, so the count is always the lines written.
    """

    def __init__(self) -> None:
        self.holding = False
        self.pending = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.holding:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def __enter__(self) -> None:
        self.holding = True

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.holding = False
        if self.pending and exc_type is None:
            self.pending = False
            raise KeyboardInterrupt


class ResultWriter:
    """Writes one JSON line per input line, in order, and counts what failed."""

    def __init__(self, path: str, records: bool) -> None:
        self.path = path
        self.records = records
        self.file: IO[str] | None = None
        if path != "-":
            try:
                self.file = open(path, "w", encoding="utf-8")  # noqa: SIM115  # see close()
            except OSError as exc:
                raise CliUsageError(
                    f"cannot write OUTPUT {path!r}: {exc.strerror or exc}"
                ) from None
        elif not sys.stdout.isatty():
            # Not looked up again: while a progress bar shows on a terminal, it stands
            # in for sys.stdout, which is only right when stdout is that terminal.
            self.file = sys.stdout
            reconfigure = getattr(self.file, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(encoding="utf-8")  # JSON lines are UTF-8, whatever the locale
        self.written = 0
        self.failed = 0
        self.stop = HeldSignals()

    def _write(self, text: str, failed: bool = False) -> None:
        out = self.file if self.file is not None else sys.stdout
        with self.stop:
            out.write(text + "\n")
            out.flush()
            self.written += 1
            self.failed += failed

    def error(self, record: ErrorRecord) -> None:
        self._write(json.dumps(record, ensure_ascii=False), failed=True)

    def result(self, value: Any, line: int) -> None:
        try:
            text = json.dumps(
                {"result": value} if self.records else value, allow_nan=False, ensure_ascii=False
            )
        except (TypeError, ValueError) as exc:
            message = f"the result is not JSON: {exc}"
            self.error(error_record("TypeError", message, line))
            return
        self._write(text)

    def close(self) -> None:
        if self.file is not None and self.path != "-":
            self.file.close()
