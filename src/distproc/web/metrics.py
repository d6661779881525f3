"""``GET /metrics``: the status report in Prometheus' text format, made by prometheus_client.

Each scrape turns the report of that moment into metric families (a custom
collector, as exporters do); the counters are the service's own counts
since it started, so a restarted service shows as a counter reset.  No label
names a task or a worker: their number would grow without bound.  The
README lists every metric; :data:`METRICS` is that list, and a test checks
that the two agree.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "METRICS", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The queue label of today's task service, which has one queue.
DEFAULT_QUEUE = "default"

#: Every metric: (name as exposed, type, labels, help).
METRICS: list[tuple[str, str, tuple[str, ...], str]] = [
    ("distproc_up", "gauge", (), "1 if the dashboard could read the status report, else 0."),
    ("distproc_start_time_seconds", "gauge", (), "When the server started, in Unix time."),
    ("distproc_tasks_total", "counter", ("queue", "outcome"),
     "Tasks finished since the service started, by outcome: done, failed, dead, cancelled."),
    ("distproc_queue_depth", "gauge", ("queue", "state"),
     "Tasks not finished, by state: queued (waiting for a worker), leased (on a worker), "
     "retrying (waiting out a retry's backoff)."),
    ("distproc_dead_letters_total", "counter", (),
     "Tasks dead-lettered since the service started (they took down max_attempts workers)."),
    ("distproc_lease_expired_total", "counter", (),
     "Leases that expired since the service started: their worker stopped sending heartbeats."),
    ("distproc_task_duration_seconds", "histogram", (),
     "How long tasks ran, from lease to result, for each attempt that reported one."),
    ("distproc_results_discarded_total", "counter", (),
     "Late results discarded since the service started (their lease had been lost)."),
    ("distproc_workers", "gauge", ("state",),
     "Connected workers, by state: active, or leaving (stopping after their tasks)."),
    ("distproc_worker_slots", "gauge", (), "Tasks the connected workers run at once, in all."),
    ("distproc_oldest_running_task_seconds", "gauge", (),
     "How long the longest-running task has run (0 when none runs)."),
    ("distproc_quarantined_functions", "gauge", (),
     "Functions that at least one connected worker cannot import."),
    ("distproc_masters", "gauge", (), "Masters (Executors, distproc map) connected."),
    ("distproc_objects", "gauge", (), "Shared objects a manager server holds."),
    ("distproc_clients", "gauge", ("protocol",),
     "Connections to the server, by protocol: native or stdlib."),
]  # fmt: skip
_HELP = {name: text for name, _, _, text in METRICS}


def _gauge(name: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, _HELP[name], labels=list(labels))


def _counter(name: str, labels: Sequence[str] = (), created: float | None = None) -> Any:
    return CounterMetricFamily(name.removesuffix("_total"), _HELP[name], labels=list(labels),
                               created=created)  # fmt: skip


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


class _ReportCollector(Collector):
    """The metric families of one report (or of no report: ``distproc_up 0``)."""

    def __init__(self, report: Mapping[str, Any] | None, now: float) -> None:
        self._report = report
        self._now = now

    def collect(self) -> Iterator[Metric]:
        up = _gauge("distproc_up")
        up.add_metric([], 0.0 if self._report is None else 1.0)
        yield up
        report = self._report
        if report is None:
            return
        started: float | None = None
        if isinstance(report.get("uptime"), (int, float)):
            started = self._now - float(report["uptime"])
            start = _gauge("distproc_start_time_seconds")
            start.add_metric([], started)
            yield start
        services = [s for s in report.get("services") or [] if isinstance(s, Mapping)]
        tasks = [s for s in services if s.get("kind") == "tasks"]
        if tasks:
            yield from self._tasks(tasks, started)
        if isinstance(report.get("objects"), list):
            objects = _gauge("distproc_objects")
            objects.add_metric([], float(len(report["objects"])))
            yield objects
        if isinstance(report.get("clients"), list):
            clients = _gauge("distproc_clients", ["protocol"])
            protocols: dict[str, int] = {"native": 0, "stdlib": 0}
            for client in report["clients"]:
                name = str(client.get("protocol", "?"))
                protocols[name] = protocols.get(name, 0) + 1
            for name, count in sorted(protocols.items()):
                clients.add_metric([name], float(count))
            yield clients

    def _tasks(self, services: list[Mapping[str, Any]], started: float | None) -> Iterator[Metric]:
        totals = _counter("distproc_tasks_total", ["queue", "outcome"], started)
        depth = _gauge("distproc_queue_depth", ["queue", "state"])
        dead = _counter("distproc_dead_letters_total", created=started)
        discarded = _counter("distproc_results_discarded_total", created=started)
        workers = _gauge("distproc_workers", ["state"])
        slots = _gauge("distproc_worker_slots")
        oldest = _gauge("distproc_oldest_running_task_seconds")
        quarantined = _gauge("distproc_quarantined_functions")
        masters = _gauge("distproc_masters")
        n_active = n_leaving = n_slots = n_masters = 0.0
        longest = 0.0
        functions: set[str] = set()
        n_dead = n_discarded = n_expired = 0.0
        durations = _Histogram()
        for service in services:
            counts = service.get("tasks") or {}
            for outcome in ("done", "failed", "dead", "cancelled"):
                totals.add_metric([DEFAULT_QUEUE, outcome], _number(counts.get(outcome)))
            for state, key in (("queued", "queued"), ("leased", "leased"), ("retrying", "delayed")):
                depth.add_metric([DEFAULT_QUEUE, state], _number(counts.get(key)))
            n_expired += _number(counts.get("lease_expired"))
            durations.add(service.get("durations"))
            n_dead += _number(counts.get("dead"))
            n_discarded += _number(counts.get("discarded"))
            n_masters += _number(service.get("masters"))
            for worker in service.get("workers") or []:
                if worker.get("leaving"):
                    n_leaving += 1
                else:
                    n_active += 1
                n_slots += _number(worker.get("slots"))
                longest = max(longest, _number(worker.get("oldest_running")))
                functions.update(str(q.get("function")) for q in worker.get("quarantined") or [])
        dead.add_metric([], n_dead)
        discarded.add_metric([], n_discarded)
        expired = _counter("distproc_lease_expired_total", created=started)
        expired.add_metric([], n_expired)
        workers.add_metric(["active"], n_active)
        workers.add_metric(["leaving"], n_leaving)
        slots.add_metric([], n_slots)
        oldest.add_metric([], longest)
        quarantined.add_metric([], float(len(functions)))
        masters.add_metric([], n_masters)
        yield from (totals, depth, dead, expired, discarded, workers, slots, oldest, quarantined,
                    masters)  # fmt: skip
        if durations.buckets is not None:
            histogram = HistogramMetricFamily(
                "distproc_task_duration_seconds", _HELP["distproc_task_duration_seconds"]
            )
            histogram.add_metric([], [(b, float(c)) for b, c in durations.buckets],
                                 durations.total)  # fmt: skip
            yield histogram


class _Histogram:
    """The task-duration histograms of the report's services, added up (same buckets)."""

    def __init__(self) -> None:
        self.buckets: list[tuple[str, float]] | None = None
        self.total = 0.0

    def add(self, wire: Any) -> None:
        """Add one backend's ``durations`` (``None``: the backend keeps none)."""
        if not isinstance(wire, Mapping) or not isinstance(wire.get("buckets"), list):
            return
        mine = [(_bound(b), _number(c)) for b, c in wire["buckets"]]
        if self.buckets is None:
            self.buckets = mine
        elif [b for b, _ in self.buckets] == [b for b, _ in mine]:
            self.buckets = [(b, c + d) for (b, c), (_, d) in zip(self.buckets, mine, strict=True)]
        else:
            return  # another backend's buckets: not added into these
        self.total += _number(wire.get("sum"))


def _bound(value: Any) -> str:
    return "+Inf" if value == "+Inf" else repr(float(value))


def render_metrics(report: Mapping[str, Any] | None) -> bytes:
    """The text of ``/metrics`` for ``report`` (``None``: the report could not be had)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ReportCollector(report, time.time()))
    return generate_latest(registry)
