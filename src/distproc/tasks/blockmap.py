"""``Executor.map_lines``: JSON lines cut into blocks, run on workers, written back in order.

The master never parses a line.  A feeder thread reads the input's raw bytes
(:class:`BlockReader`), cuts a *block* of whole lines at a newline, numbers
its first line by counting newlines, and submits the block as one task; the
worker that leases it parses, calls and writes the JSON of every line
(:func:`.blocks.run_block`).  The caller's iterator yields each block's
output lines in input order, as soon as the blocks before it are out.

**Sizes.**  The first blocks hold one line each, a few per worker, until a
worker has said how long one took; then blocks grow (at most 4x from one to
the next) to about ``BLOCK_SECONDS`` of work, at most ``MAX_BLOCK`` bytes,
and, when the input's size is known, small enough near its end that every
worker gets a share.  ``block_lines`` fixes the number of lines instead.
A block never waits for input that has not arrived: a slow input (a
terminal, ``tail -f``) has its lines run as they come.

**Bounded.**  At most ``4 x workers`` blocks (at least 8) and ``read_ahead``
input bytes are in flight, wherever they are: read ahead, queued, running,
or done and waiting for the blocks before them to be written.  A slow line
holds its block, and the others wait behind it within that bound: the
output never piles up.  Nothing is kept per line.

**Nothing lost.**  A block is one task.  A block whose worker is lost is
put back at the front of the queue at once by the task backend (:mod:`.backends`);
once it is known to have taken a worker down (a strike), its master splits
it in halves at a line boundary and sends both at the front, so the line
that kills workers is narrowed down while the others run.  A block of one
line is then a task like any other: dead-lettered after ``max_attempts``
lost workers, and written as that line's error record.  A line too large to
reach a worker in one frame gets an error record here, and no worker sees
it.  A block whose output would not fit in one frame comes back partly done
and the rest is sent again, at the front.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import queue
import select
import threading
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from ..errors import FrameTooLargeError, WorkerLostError
from .blocks import BLOCK_OPTION, split_lines
from .jsonlines import error_line, type_name
from .payloads import NATIVE, encode

if TYPE_CHECKING:
    from .progress import ProgressBar
    from .submitter import Submitter

__all__ = [
    "BLOCK_SECONDS",
    "MAX_BLOCK",
    "READ_AHEAD",
    "BlockReader",
    "BlockRun",
    "InputReadError",
    "LinesOut",
    "input_size",
]

BLOCK_SECONDS = 0.05
MAX_BLOCK = 256 * 1024
#: Input bytes in flight at most, by default (``distproc map --read-ahead``).
READ_AHEAD = 8 * 1024 * 1024
BLOCKS_PER_WORKER = 4
MIN_WINDOW = 8
READ_SIZE = 64 * 1024
_BOM = b"\xef\xbb\xbf"
_END = object()
_Future = concurrent.futures.Future
#: A block lost once comes back to its master, which splits it.
_SPLIT_OPTS = {BLOCK_OPTION: True, "max_attempts": 1, "split": True}


class InputReadError(OSError):
    """Reading the input failed (a failing disk or pipe): the run stops after what was read."""


class LinesOut(NamedTuple):
    """Output lines of consecutive input lines: ``end`` is the input offset after them.

    The last one of each block read from the input has ``checkpoint``: the
    next input line's number and, if the run has a hasher, a copy of it
    after the block's bytes (what ``--resume`` records).
    """

    data: bytes
    failed: int
    end: int
    checkpoint: tuple[int, Any] | None = None


class Block:
    """Whole input lines: ``data`` from input offset ``start``, its first line numbered ``first``.

    ``too_large`` is the size of a single line that cannot reach a worker
    (then ``data`` is empty): it gets an error record instead.
    """

    __slots__ = ("after", "data", "digest", "end", "first", "future", "lock", "start", "too_large")

    def __init__(self, data: bytes, first: int, start: int, end: int, too_large: int = 0) -> None:
        self.data = data
        self.first = first
        self.start = start
        self.end = end
        self.too_large = too_large
        self.digest: Any = None  # the reader's hasher after this block
        self.future: _Future[Any] | None = None
        #: What runs in this block's place, once known: its halves (lost), its rest (too large).
        self.after: list[Block] | None = None
        self.lock = threading.Lock()

    def lines(self) -> Iterator[int]:
        """The numbers of its non-blank lines."""
        for index, raw in enumerate(self.data.split(b"\n")):
            if raw.strip():
                yield self.first + index


class BlockReader:
    """Cuts a binary stream into blocks of whole lines, reading as little ahead as it can.

    ``offset`` and ``first_line`` say where in the input the stream starts
    (a resumed run); a UTF-8 byte order mark at the very start is skipped.
    A line longer than ``max_line`` is read past, not kept.  ``hasher`` (a
    :mod:`hashlib` object), if given, is updated with every byte taken, and
    each block keeps a copy of it.
    """

    def __init__(
        self,
        stream: IO[bytes],
        *,
        max_line: int,
        offset: int = 0,
        first_line: int = 1,
        hasher: Any = None,
    ) -> None:
        self.stream = stream
        self.hasher = hasher
        self.max_line = max_line
        self.offset = offset  # of carry[0] in the input
        self.line = first_line  # the number of carry[0]'s line
        self.carry = bytearray()
        self.searched = 0  # carry[:searched] holds no newline
        self.eof = False
        self.at_start = offset == 0
        read1 = getattr(stream, "read1", None)
        self._read = read1 if read1 is not None else stream.read
        try:
            self._fd: int | None = stream.fileno()
        except (OSError, ValueError, AttributeError):
            self._fd = None

    def _ready(self) -> bool:
        """Whether a read would return at once (always, for a file or a stand-in)."""
        if self._fd is None:
            return True
        try:
            return bool(select.select([self._fd], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def _fill(self) -> None:
        data = self._read(READ_SIZE)
        if not data:
            self.eof = True
            return
        self.carry += data
        # Undecided only while the input so far could be the start of a mark.
        if self.at_start and (len(self.carry) >= len(_BOM) or not _BOM.startswith(self.carry)):
            self.at_start = False
            if self.carry.startswith(_BOM):
                del self.carry[: len(_BOM)]
                self.offset += len(_BOM)
                if self.hasher is not None:
                    self.hasher.update(_BOM)

    def _newline(self, start: int) -> int:
        """The index of the first newline in carry from ``start`` (or from where it may be)."""
        found = self.carry.find(b"\n", max(start, self.searched))
        if found < 0:
            self.searched = len(self.carry)
        return found

    def _cut(self, size: int, lines: int | None) -> int:
        """Where a block of ``size`` bytes (or ``lines`` lines) ends in carry, or -1."""
        carry = self.carry
        if lines is not None:
            at = -1
            for _ in range(lines):
                at = carry.find(b"\n", at + 1)
                if at < 0:
                    return -1
            return at + 1
        if len(carry) < size:
            return -1
        at = carry.rfind(b"\n", 0, size)
        if at < 0:
            at = self._newline(size)  # a line longer than the block: cut after it
        return at + 1 if at >= 0 else -1

    def _take(self, cut: int) -> Block:
        data = bytes(self.carry[:cut])
        del self.carry[:cut]
        self.searched = max(0, self.searched - cut)
        block = Block(data, self.line, self.offset, self.offset + cut)
        self.offset += cut
        self.line += data.count(b"\n")
        if self.hasher is not None:
            self.hasher.update(data)
            block.digest = self.hasher.copy()
        return block

    def next(self, size: int, lines: int | None = None) -> Block | None:
        """The next block of about ``size`` bytes (or ``lines`` lines); ``None`` at the end."""
        while True:
            if self.at_start and not self.eof and len(self.carry) < len(_BOM):
                self._fill()
                continue
            cut = self._cut(size, lines)
            if cut > 0:
                return self._take(cut)
            if self.eof:
                return self._take(len(self.carry)) if self.carry else None
            last = self.carry.rfind(b"\n")
            if last >= 0 and not self._ready():
                return self._take(last + 1)  # whole lines at hand, and no more yet
            if last < 0 and len(self.carry) > self.max_line:
                return self._skip_line()
            self._fill()

    def _skip_line(self) -> Block:
        """Read past a line too large to send: a block that stands for it, with its size."""
        size = 0
        while True:
            at = self.carry.find(b"\n")
            piece = self.carry[: at + 1] if at >= 0 else self.carry
            size += len(piece)
            if self.hasher is not None:
                self.hasher.update(piece)
            if at >= 0:
                del self.carry[: at + 1]
                break
            self.carry.clear()
            if self.eof:
                break
            self._fill()
        self.searched = 0
        block = Block(b"", self.line, self.offset, self.offset + size, too_large=size)
        self.offset += size
        self.line += 1
        if self.hasher is not None:
            block.digest = self.hasher.copy()
        return block


class BlockRun:
    """One ``map_lines`` call: see the module docstring."""

    def __init__(
        self,
        executor: Submitter,
        ref: str,
        reader: BlockReader,
        *,
        star: bool,
        records: bool,
        read_ahead: int,
        block_lines: int | None,
        input_end: int | None,
        bar: ProgressBar | None,
    ) -> None:
        self.ex = executor
        self.ref = ref
        self.reader = reader
        self.star = star
        self.records = records
        self.read_ahead = max(1, read_ahead)
        self.block_lines = block_lines
        self.input_end = input_end  # the input's size, when it is a file
        self.bar = bar
        self.limit = executor.max_task_bytes
        self.pending: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.stop = threading.Event()
        self.cond = threading.Condition(threading.Lock())
        self.in_flight = 0  # blocks submitted and not yet yielded
        self.in_flight_bytes = 0
        self.rate: float | None = None  # input bytes per second of a worker's time
        self.size = 1
        self.reading = False  # the feeder waits for input (which may never come)
        self.feeder = threading.Thread(target=self._feed, name="distproc-map-feed", daemon=True)

    # -------------------------------------------------------------- feeding
    def _workers(self) -> int:
        return max(1, self.ex._count_workers() or 0)

    def _window_full(self) -> bool:
        if self.in_flight == 0:
            return False
        workers = self._workers()
        if self.rate is None and self.block_lines is None:
            return self.in_flight >= 2 * workers  # one-line blocks until a time is known
        most = max(MIN_WINDOW, BLOCKS_PER_WORKER * workers)
        return self.in_flight >= most or self.in_flight_bytes >= self.read_ahead

    def _next_size(self) -> int:
        if self.rate is None:
            return 1
        size = min(MAX_BLOCK, int(self.rate * BLOCK_SECONDS), 4 * self.size)
        if self.input_end is not None:
            left = self.input_end - self.reader.offset
            size = min(size, -(-left // (BLOCKS_PER_WORKER * self._workers())))
        self.size = max(1, size)
        return self.size

    def _feed(self) -> None:
        try:
            while not self.stop.is_set():
                with self.cond:
                    while self._window_full() and not self.stop.is_set():
                        self.cond.wait()
                if self.stop.is_set():
                    break
                self.reading = True
                try:
                    block = self.reader.next(self._next_size(), self.block_lines)
                except OSError as exc:
                    raise InputReadError(exc.errno, exc.strerror or str(exc)) from exc
                finally:
                    self.reading = False
                if block is None or self.stop.is_set():
                    break
                with self.cond:
                    self.in_flight += 1
                    self.in_flight_bytes += len(block.data)
                if block.too_large:
                    block.future = _Future()
                    block.future.set_result(self._too_large(block))
                else:
                    self._submit(block, _SPLIT_OPTS if _lines(block.data) > 1 else None, False)
                self.pending.put(block)
        except BaseException as exc:
            self.pending.put(exc)
        self.pending.put(_END)

    def _submit(self, block: Block, opts: dict[str, Any] | None, again: bool) -> None:
        """Send ``block`` as a task; ``again``: at the front, at once (a lost block's part)."""
        payload = encode(((block.data, block.first, self.star, self.records), {}), NATIVE)
        options = {**self.ex._opts, **(opts or {BLOCK_OPTION: True})}
        if again:
            options["front"] = True
        future = self.ex._enqueue(self.ref, payload, options, wait=not again)
        block.future = future
        future.add_done_callback(functools.partial(self._on_done, block))

    def _too_large(self, block: Block) -> list[Any]:
        try:
            self.ex._check_size(block.too_large)
        except FrameTooLargeError as exc:
            line = error_line(type_name(type(exc)), str(exc), block.first)
        else:  # not reached: the reader skips only lines over the limit
            line = error_line("FrameTooLargeError", "line too large", block.first)
        return [0.0, line, 1, 0]

    # -------------------------------------------------------- lost blocks
    def _on_done(self, block: Block, future: _Future[Any]) -> None:
        """A block finished (on whichever thread delivered it): send what runs in its place."""
        if self.stop.is_set() or future.cancelled():
            return
        exc = future.exception()
        if isinstance(exc, WorkerLostError) and _lines(block.data) > 1:
            self._after(block)
        elif exc is None:
            consumed = future.result()[3]
            if consumed < len(block.data):
                self._after(block)

    def _after(self, block: Block) -> list[Block]:
        """What runs in ``block``'s place: its halves if it was lost, else its unfinished rest."""
        with block.lock:
            if block.after is not None:
                return block.after
            assert block.future is not None
            exc = block.future.exception()
            if exc is not None:
                first, second = split_lines(block.data)
                parts = [(first, block.first), (second, block.first + first.count(b"\n"))]
            else:
                consumed = block.future.result()[3]
                rest = block.data[consumed:]
                parts = [(rest, block.first + block.data.count(b"\n", 0, consumed))]
            after = []
            start = block.start if exc is not None else block.start + consumed
            for data, first_line in parts:
                if not data:
                    continue
                part = Block(data, first_line, start, start + len(data))
                start += len(data)
                opts: dict[str, Any] = _SPLIT_OPTS if _lines(data) > 1 else {BLOCK_OPTION: True}
                if isinstance(exc, WorkerLostError):
                    history = [list(a) for a in exc.attempts]
                    opts = {**opts, "strikes": 1, "history": history}
                try:
                    self._submit(part, opts, True)
                except RuntimeError as gone:  # shut down meanwhile: its lines stay lost
                    part.future = _Future()
                    part.future.set_exception(exc or gone)
                after.append(part)
            block.after = after
            return after

    # ------------------------------------------------------------ results
    def _outputs(self, block: Block) -> Iterator[LinesOut]:
        assert block.future is not None
        try:
            seconds, data, failed, consumed = block.future.result()
        except WorkerLostError as exc:
            if _lines(block.data) > 1:
                for part in self._after(block):
                    yield from self._outputs(part)
            else:
                yield self._failed(block, exc)
            return
        except concurrent.futures.CancelledError:
            raise
        except Exception as exc:  # the block as a whole failed (no worker can import...)
            yield self._failed(block, exc)
            return
        if seconds > 0 and consumed > 0:
            rate = consumed / seconds
            self.rate = rate if self.rate is None else self.rate * 0.7 + rate * 0.3
        yield LinesOut(data, failed, block.start + consumed if not block.too_large else block.end)
        if not block.too_large and consumed < len(block.data):
            for part in self._after(block):
                yield from self._outputs(part)

    def _failed(self, block: Block, exc: BaseException) -> LinesOut:
        """Every line of ``block`` gets the error record of ``exc``."""
        kind, message = type_name(type(exc)), str(exc)
        tb = getattr(exc.__cause__, "tb", None)
        tb = tb if isinstance(tb, str) else None
        lines = [error_line(kind, message, number, tb) for number in block.lines()]
        return LinesOut(b"".join(lines), len(lines), block.end)

    def __iter__(self) -> Iterator[LinesOut]:
        self.feeder.start()
        bar = self.bar
        try:
            while True:
                item = self.pending.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                outs = list(self._outputs(item))
                next_line = item.first + (1 if item.too_large else item.data.count(b"\n"))
                outs[-1] = outs[-1]._replace(checkpoint=(next_line, item.digest))
                for out in outs:
                    if bar is not None:
                        bar.advance(out.data.count(b"\n"))
                    yield out
                with self.cond:
                    self.in_flight -= 1
                    self.in_flight_bytes -= len(item.data)
                    self.cond.notify()
        finally:
            self._close()

    def _close(self) -> None:
        self.stop.set()
        with self.cond:
            self.cond.notify_all()
        left: list[_Future[Any]] = []
        last = False
        while True:  # cancel what is left; let the feeder finish, unless it waits for input
            try:
                item = self.pending.get_nowait()
            except queue.Empty:
                if last:
                    break
                if not self.feeder.is_alive() or self.reading:
                    last = True  # once more: a block it put just before
                    continue
                self.feeder.join(0.05)
                continue
            if isinstance(item, Block):
                left.extend(_futures(item))
        if left:
            self.ex.cancel_futures(left)
        if self.bar is not None:
            self.bar.close()


def _lines(data: bytes) -> int:
    """How many lines ``data`` holds (a last line without its newline counts)."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _futures(block: Block) -> Iterator[_Future[Any]]:
    if block.future is not None:
        yield block.future
    for part in block.after or ():
        yield from _futures(part)


def input_size(stream: IO[bytes]) -> int | None:
    """The bytes left in ``stream`` if it is a regular file, else ``None``."""
    try:
        info = os.fstat(stream.fileno())
        return max(0, info.st_size - stream.tell()) if stream.seekable() else None
    except (OSError, ValueError, AttributeError):
        return None
