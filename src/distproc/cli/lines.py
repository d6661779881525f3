"""The input and output of ``distproc map``: INPUT opened as bytes, OUTPUT written by blocks.

The lines themselves are read and written by the workers
(:mod:`distproc.tasks.jsonlines`); here :func:`open_input` opens INPUT,
:func:`count_calls` counts its lines for a progress bar, :class:`BlockWriter`
writes each block of output lines with one ``write`` and counts them, and
:class:`HeldSignals` is the run's SIGINT/SIGTERM handler, which never cuts a
line in half.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import stat
import sys
import termios
from types import FrameType
from typing import IO

import click

from .errors import CliUsageError

__all__ = ["BlockWriter", "HeldSignals", "count_calls", "lines_at_hand", "open_input"]

#: An input this small that has all arrived is looked at before any worker starts.
AT_HAND = 8192


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


def lines_at_hand(stream: IO[bytes]) -> int | None:
    """The number of non-blank lines of ``stream`` if all of it has arrived and it is small.

    ``None`` when more may come (a pipe whose writer has not closed it, a
    terminal) or when it is larger than :data:`AT_HAND`; nothing is consumed.
    """
    peek = getattr(stream, "peek", None)
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            left = os.fstat(fd).st_size - stream.tell()
        elif stat.S_ISFIFO(mode):
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            events = poller.poll(0)
            if not events or not events[0][1] & select.POLLHUP:
                return None  # the writer may write more
            left = int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)
        else:
            return None
    except (OSError, ValueError, AttributeError):
        return None
    if peek is None or left > AT_HAND:
        return None
    data = peek(AT_HAND)[:left] if left else b""
    if len(data) < left:
        return None
    return sum(1 for line in data.split(b"\n") if line.strip())


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


class BlockWriter:
    """Writes the output lines of a run, one ``write`` per block, and counts them.

    Each block is written and counted inside ``with self.stop:``, so a
    signal never cuts a line in half and :attr:`written` is always the lines
    written.  ``append`` adds to OUTPUT (a resumed run) instead of starting it anew.
    """

    def __init__(self, path: str, *, append: bool = False) -> None:
        self.path = path
        self.file: IO[bytes] | None = None
        self.text = False  # stdout is a terminal: write text, above any progress bar
        if path != "-":
            try:
                self.file = open(path, "ab" if append else "wb")  # noqa: SIM115  # see close()
            except OSError as exc:
                raise CliUsageError(
                    f"cannot write OUTPUT {path!r}: {exc.strerror or exc}"
                ) from None
        elif sys.stdout.isatty():
            self.text = True
        else:
            self.file = getattr(sys.stdout, "buffer", None)
            if self.file is None:  # a text stand-in (a test's): write text to it
                self.text = True
            else:
                sys.stdout.flush()
        self.written = 0
        self.failed = 0
        self.stop = HeldSignals()

    def write(self, data: bytes, failed: int) -> None:
        with self.stop:
            if self.text:
                # Looked up now: while a progress bar shows, it stands in for sys.stdout.
                sys.stdout.write(data.decode("utf-8", "replace"))
                sys.stdout.flush()
            else:
                assert self.file is not None
                self.file.write(data)
                self.file.flush()
            self.written += data.count(b"\n")
            self.failed += failed

    def close(self) -> None:
        if self.file is not None and self.path != "-":
            self.file.close()
