"""The progress bar that ``Executor.map`` and ``distproc map`` draw on stderr."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["ProgressBar"]

#: Redraw at most this often (s): advancing is cheap, drawing is not.
REFRESH = 0.1


class ProgressBar:
    """done/total, rate, ETA and connected workers; ``total`` may be unknown (``None``)."""

    def __init__(self, total: int | None, workers: Callable[[], int | None]) -> None:
        self._workers = workers
        self._progress = Progress(
            TextColumn("[bold]distproc"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[workers]}"),
            console=Console(stderr=True),
            refresh_per_second=10,
            transient=False,
            # The caller's prints go where they were going, not around the bar.
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._progress.add_task("map", total=total, rate="", workers="")
        self._done = 0
        self._shown = 0
        self._started = time.monotonic()
        self._last = 0.0
        self._progress.start()

    def advance(self, n: int = 1) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._last >= REFRESH:
            self._update(now)

    def _update(self, now: float) -> None:
        self._last = now
        elapsed = max(now - self._started, 1e-9)
        workers = self._workers()
        self._progress.update(
            self._task,
            advance=self._done - self._shown,
            rate=f"{self._done / elapsed:,.0f}/s",
            workers="" if workers is None else f"{workers} worker{'s' if workers != 1 else ''}",
        )
        self._shown = self._done

    def close(self) -> None:
        self._update(time.monotonic())
        self._progress.stop()
