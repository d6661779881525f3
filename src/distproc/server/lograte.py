"""Log lines that a peer can cause, rate-limited, with a count of what was left out.

A hostile or broken peer can fail a handshake thousands of times a second,
and a server out of file descriptors fails every ``accept()``.  One line per
event would drown the log (and the disk).  :class:`LogLimiter` lets the first
:attr:`~LogLimiter.burst` lines of a kind through in each window of
:attr:`~LogLimiter.window` seconds, counts the others, and says how many it
left out with the next line of that kind that gets through (or at
:meth:`~LogLimiter.flush`, when the server stops).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["LogLimiter"]


class LogLimiter:
    """At most ``burst`` lines of each kind per ``window`` seconds (see the module docstring)."""

    def __init__(self, logger: logging.Logger, *, burst: int = 10, window: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.window = window
        self._lock = threading.Lock()
        #: kind -> [window start, lines logged in it, lines suppressed since the last one logged]
        self._kinds: dict[str, list[Any]] = {}

    def log(self, level: int, kind: str, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log ``msg % args`` at ``level`` unless ``kind`` is over its rate."""
        if not self.logger.isEnabledFor(level):
            return
        now = time.monotonic()
        with self._lock:
            state = self._kinds.setdefault(kind, [now, 0, 0])
            if now - state[0] >= self.window:
                state[0], state[1] = now, 0
            if state[1] >= self.burst:
                state[2] += 1
                return
            state[1] += 1
            suppressed, state[2] = state[2], 0
        if suppressed:
            msg += " (and %d more like it, not logged, in the last %gs)"
            args = (*args, suppressed, self.window)
        self.logger.log(level, msg, *args, **kwargs)

    def warning(self, kind: str, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, kind, msg, *args)

    def info(self, kind: str, msg: str, *args: Any) -> None:
        self.log(logging.INFO, kind, msg, *args)

    def suppressed(self, kind: str) -> int:
        """Lines of ``kind`` left out since the last one logged."""
        with self._lock:
            state = self._kinds.get(kind)
            return 0 if state is None else int(state[2])

    def flush(self) -> None:
        """Say how many lines of each kind were left out and not yet counted in a line."""
        with self._lock:
            pending = [(kind, state[2]) for kind, state in self._kinds.items() if state[2]]
            for state in self._kinds.values():
                state[2] = 0
        for kind, count in pending:
            self.logger.warning("%d more lines of %s were not logged", count, kind)
