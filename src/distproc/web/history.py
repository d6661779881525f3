"""What the page shows beyond one report: throughput over time, lost workers, a map's ETA.

A status report says what is true now.  The dashboard reads one every
second or so, and :class:`History` keeps what follows from their
succession, per service of the report:

* **throughput**: tasks finished (done, failed or dead-lettered) per second,
  one point per ``BUCKET`` seconds over the last ``SPAN`` seconds;
* **lost workers**: a worker that was in one report and is not in the next
  is kept for ``GONE_KEPT`` seconds (at most ``GONE_MAX`` of them), with how
  it ended as far as the reports tell: ``"left"`` if it had said it was
  leaving, else ``"lost"`` (its connection dropped or it stopped answering;
  which of the two, the report does not say);
* for a ``map`` run, its rate over the last ``RATE_WINDOW`` seconds and,
  when its total is known, the ETA at that rate.

A service whose process changed (another pid) starts a fresh history.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["BUCKET", "GONE_KEPT", "GONE_MAX", "RATE_WINDOW", "SPAN", "History"]

SPAN = 600.0
BUCKET = 5.0
GONE_KEPT = 300.0
GONE_MAX = 50
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
        self.workers: dict[str, dict[str, Any]] = {}
        self.gone: deque[dict[str, Any]] = deque(maxlen=GONE_MAX)

    def update(self, service: Mapping[str, Any], now: float) -> dict[str, Any]:
        finished = _finished(service.get("tasks") or {})
        if self.latest is not None and finished < self.latest[1]:
            self.points.clear()  # the counts went back: a counter was reset
        self.latest = (now, finished)
        if not self.points or now - self.points[-1][0] >= BUCKET:
            self.points.append(self.latest)
        while self.points and self.points[0][0] < now - SPAN:
            self.points.popleft()
        self._workers(service.get("workers") or [], now)
        return {"throughput": self._series(now), "gone_workers": self._gone(now)}

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

    def _workers(self, rows: list[Any], now: float) -> None:
        seen = {str(w.get("id")): w for w in rows if isinstance(w, Mapping)}
        for wid, last in self.workers.items():
            if wid not in seen:
                ended = "left" if last.get("leaving") else "lost"
                kept = {k: last.get(k) for k in ("id", "host", "pid", "slots", "done")}
                self.gone.append({**kept, "ended": ended, "gone_at": now})
        self.workers = {wid: dict(row) for wid, row in seen.items()}
        while self.gone and self.gone[0]["gone_at"] < now - GONE_KEPT:
            self.gone.popleft()

    def _gone(self, now: float) -> list[dict[str, Any]]:
        out = []
        for row in reversed(self.gone):  # the latest first
            shown = {k: v for k, v in row.items() if k != "gone_at"}
            shown["gone_for"] = round(now - row["gone_at"], 1)
            out.append(shown)
        return out


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
