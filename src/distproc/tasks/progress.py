"""The progress bar that ``Executor.map`` and ``distproc map`` draw on stderr.

One line at the bottom of the terminal: done (of the total, when it is
known), the rate over the last ``RATE_WINDOW`` seconds, the time elapsed,
the ETA (only when the total is known) and the workers connected now.  Every
figure is read when the line is drawn, about ten times a second, so it stays
true while nothing completes (workers leaving, a stalled run).

Other output shares the terminal cleanly: while the bar shows, text written
to ``sys.stderr`` (log lines), and to ``sys.stdout`` when it is the same
terminal (``distproc map``'s results), goes above the bar: the bar's line is
erased, the text written whole lines at a time to its own stream, and the
bar drawn again.  rich renders the line; the bar does the writing itself,
so a result costs one write, not a redraw.

When stderr is not a terminal, nothing is drawn until the end: one line with
the final figures.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.progress_bar import ProgressBar as _Bar
from rich.table import Table
from rich.text import Text

__all__ = ["ProgressBar"]

#: Redraw at most this often (s).
REFRESH = 0.1
#: The rate is measured over this many seconds.
RATE_WINDOW = 10.0
_ERASE = "\r\x1b[2K"


def _same_terminal(a: IO[Any], b: IO[Any]) -> bool:
    try:
        return a.isatty() and b.isatty() and os.path.samestat(
            os.fstat(a.fileno()), os.fstat(b.fileno())
        )
    except (OSError, ValueError, AttributeError):
        return False


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class _Above(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr``: whole lines go above the bar."""

    def __init__(self, bar: ProgressBar, stream: IO[str]) -> None:
        self._bar = bar
        self._stream = stream
        self._partial = ""

    def write(self, text: str) -> int:
        whole, newline, rest = (self._partial + text).rpartition("\n")
        self._partial = rest
        if newline:
            self._bar.write_above(self._stream, whole + "\n")
        return len(text)

    def flush(self) -> None:
        """Whole lines are written at once; a partial line waits for its end."""

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]  # the stream's
        return str(getattr(self._stream, "encoding", "utf-8"))

    def close_line(self) -> None:
        if self._partial:
            self._bar.write_above(self._stream, self._partial)
            self._partial = ""


class ProgressBar:
    """done/total, rate, ETA and connected workers; ``total`` may be unknown (``None``)."""

    def __init__(self, total: int | None, workers: Callable[[], int | None]) -> None:
        self._total = total
        self._workers = workers
        self._done = 0
        self._started = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque([(self._started, 0)])
        self._lock = threading.RLock()
        self._err: IO[str] = sys.stderr
        self._out: IO[str] = sys.stdout
        self._console = Console(file=self._err)
        self._live = self._console.is_terminal
        self._drawn = False  # the bar's line is on the screen
        self._last_draw = 0.0
        self._closed = threading.Event()
        self._proxies: list[tuple[str, _Above]] = []
        if self._live:
            self._redirect("stderr", self._err)
            if _same_terminal(self._out, self._err):
                self._redirect("stdout", self._out)
            self._draw()
            self._thread = threading.Thread(target=self._refresh, name="distproc-bar", daemon=True)
            self._thread.start()

    def _redirect(self, name: str, stream: IO[str]) -> None:
        proxy = _Above(self, stream)
        self._proxies.append((name, proxy))
        setattr(sys, name, proxy)

    # --------------------------------------------------------------- counting
    def advance(self, n: int = 1) -> None:
        """``n`` more calls are done (cheap: the line is drawn on its own thread)."""
        self._done += n

    # ---------------------------------------------------------------- drawing
    def _rate(self, now: float) -> float:
        samples = self._samples
        samples.append((now, self._done))
        while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW:
            samples.popleft()
        then, done_then = samples[0]
        return (self._done - done_then) / max(now - then, 1e-9)

    def render(self, now: float | None = None, graphic: bool = True) -> Table:
        """The bar's line, with every figure as it is now."""
        now = time.monotonic() if now is None else now
        done, total = self._done, self._total
        rate = self._rate(now)
        parts: list[RenderableType] = [Text("distproc", style="bold")]
        if total is not None:
            if graphic:
                parts.append(_Bar(total=max(total, 1), completed=min(done, total), width=30))
            percent = 100 * done / total if total else 100.0
            parts.append(Text(f"{done:,}/{total:,} {percent:3.0f}%"))
        else:
            parts.append(Text(f"{done:,} done"))
        parts.append(Text(f"{rate:,.0f}/s"))
        parts.append(Text(_clock(now - self._started)))
        if total is not None:
            left = total - done
            eta = "0:00:00" if left <= 0 else _clock(left / rate) if rate > 0 else "-:--:--"
            parts.append(Text(f"ETA {eta}"))
        workers = self._workers()
        if workers is not None:
            parts.append(Text(f"{workers} worker{'' if workers == 1 else 's'}"))
        grid = Table.grid(padding=(0, 1))
        for _ in parts:
            grid.add_column(no_wrap=True)
        grid.add_row(*parts)
        return grid

    def _line(self) -> str:
        width = max(20, self._console.width - 1)  # never wraps: one \r erases it
        console = Console(
            file=io.StringIO(), width=width, force_terminal=True,
            color_system=self._console.color_system,  # type: ignore[arg-type]  # one it found
        )  # fmt: skip
        with console.capture() as capture:
            console.print(self.render(), end="", crop=True, overflow="crop")
        return capture.get().split("\n", 1)[0]

    def _draw(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._err.write(_ERASE + self._line())
            self._err.flush()
            self._drawn = True
            self._last_draw = time.monotonic()

    def _refresh(self) -> None:
        while not self._closed.wait(REFRESH):
            self._draw()

    def write_above(self, stream: IO[str], text: str) -> None:
        """Write ``text`` (whole lines) to ``stream`` above the bar."""
        with self._lock:
            if self._drawn:
                self._err.write(_ERASE)
                self._err.flush()
                self._drawn = False
            stream.write(text)
            stream.flush()
            if time.monotonic() - self._last_draw >= REFRESH:
                self._draw()  # else the refresh thread draws it, soon

    def close(self) -> None:
        """Draw the final figures and leave them on their own line; stop redirecting."""
        if not self._live:  # one line of figures, as wide as they need
            with self._lock:
                self._console.print(self.render(graphic=False), crop=False, soft_wrap=True)
            return
        with self._lock:
            self._closed.set()
        self._thread.join()
        with self._lock:
            for name, proxy in reversed(self._proxies):
                proxy.close_line()
                if getattr(sys, name) is proxy:
                    setattr(sys, name, self._err if name == "stderr" else self._out)
            line = self._line()
            self._err.write(_ERASE + line + "\n")
            self._err.flush()
            self._drawn = False
