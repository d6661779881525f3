"""What the page shows beyond one report: throughput over time and a map's ETA.

A status report says what is true now.  The dashboard reads one every
second or so, and :class:`History` keeps what follows from their
succession, per service of the report:

* **throughput**: tasks finished (done, failed or dead-lettered) per second,
  one point per ``BUCKET`` seconds over the last ``SPAN`` seconds;
* for a ``map`` run, its rate over the last ``RATE_WINDOW`` seconds and,
  when its total is known, the ETA at that rate.

A service whose process changed (another pid) starts a fresh history.  The
workers that went, with how each ended, are the backend's to tell: they are
in the report (``gone_workers``).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["BUCKET", "RATE_WINDOW", "SPAN", "History"]

SPAN = 600.0
BUCKET = 5.0
RATE_WINDOW = 15.0

_Key = tuple[Any, ...]


def _finished(counts: Mapping[str, Any]) -> float:
    return float(sum(counts.get(name) or 0 for name in ("done", "failed", "dead")))


def _rate(samples: deque[tuple[float, float]], now: float, window: float) -> float | None:
    """Per second, from the oldest sample within ``window`` to the newest."""
    recent = [s for s in samples if s[0] >= now - window]
    if len(recent) < 2 or recent[-1][0] <= recent[0][0]:
        return None
    return (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])


class _Tasks:
    """The history of one task service."""

    def __init__(self) -> None:
        self.points: deque[tuple[float, float]] = deque()  # (time, finished), BUCKET apart
        self.latest: tuple[float, float] | None = None

    def update(self, service: Mapping[str, Any], now: float) -> dict[str, Any]:
        finished = _finished(service.get("tasks") or {})
        if self.latest is not None and finished < self.latest[1]:
            self.points.clear()  # the counts went back: a counter was reset
        self.latest = (now, finished)
        if not self.points or now - self.points[-1][0] >= BUCKET:
            self.points.append(self.latest)
        while self.points and self.points[0][0] < now - SPAN:
            self.points.popleft()
        return {"throughput": self._series(now)}

    def _series(self, now: float) -> list[list[float]]:
        """``[seconds before now, tasks per second]`` points, oldest first."""
        marks = list(self.points)
        if self.latest is not None and marks and self.latest[0] - marks[-1][0] >= 1.0:
            marks.append(self.latest)
        return [
            [round(b[0] - now, 1), round((b[1] - a[1]) / (b[0] - a[0]), 3)]
            for a, b in itertools.pairwise(marks)
            if b[0] > a[0]
        ]


class _Map:
    """The history of one ``map`` run."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque()

    def update(self, run: Mapping[str, Any], now: float) -> dict[str, Any]:
        done = float(run.get("done") or 0)
        self.samples.append((now, done))
        while self.samples and self.samples[0][0] < now - RATE_WINDOW:
            self.samples.popleft()
        rate = _rate(self.samples, now, RATE_WINDOW)
        total = run.get("total")
        eta = None
        if isinstance(total, (int, float)) and rate:
            eta = max(0.0, (total - done) / rate) if rate > 0 else None
        return {"rate": rate, "eta": eta}


class History:
    """The derived view of a succession of reports (see the module docstring)."""

    def __init__(self) -> None:
        self._kept: dict[_Key, _Tasks | _Map] = {}

    def update(self, report: Mapping[str, Any], now: float) -> list[dict[str, Any] | None]:
        """Take in ``report`` (read at ``now``, monotonic seconds); the view of each service.

        The list has one entry per entry of ``report["services"]``, in order:
        a dict for a task service or a map run, ``None`` for other kinds.
        """
        kept: dict[_Key, _Tasks | _Map] = {}
        views: list[dict[str, Any] | None] = []
        for index, service in enumerate(report.get("services") or []):
            kind = service.get("kind") if isinstance(service, Mapping) else None
            if kind not in ("tasks", "map"):
                views.append(None)
                continue
            assert isinstance(service, Mapping)
            key = (index, kind, service.get("address"), service.get("pid"), service.get("id"))
            entry = self._kept.get(key) or (_Tasks() if kind == "tasks" else _Map())
            kept[key] = entry
            views.append(entry.update(service, now))
        self._kept = kept
        return views
