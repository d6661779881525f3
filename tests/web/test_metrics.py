"""``/metrics`` against a real task service with real workers, read with prometheus_client's
own parser; and the derived view (throughput, a map's ETA)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import dp_taskfns as fns
import pytest
from hub import Hub
from prometheus_client.parser import text_string_to_metric_families
from shared_fixtures import wait_until
from webtools import request

import distproc
from distproc.errors import WorkerLostError
from distproc.tasks.backends.base import Durations
from distproc.web import METRICS, render_metrics
from distproc.web.history import BUCKET, History

README = Path(__file__).parents[2] / "README.md"


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = request(url + "metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_metrics_count_what_the_service_did(hub: Hub, tmp_path: Path) -> None:
    with distproc.Executor(workers=2, max_attempts=2, heartbeat_timeout=3.0, progress=False,
                           retry_on=(ConnectionError,), max_retries=1, retry_backoff=10.0,
                           http=("127.0.0.1", 0)) as ex:  # fmt: skip
        url = ex.dashboard_url
        assert url is not None
        # A retry waiting out its backoff (10 s: the scrape comes well within it).
        retried = ex.submit(fns.flaky, str(tmp_path), 1)
        wait_until(lambda: ex.status()["tasks"]["delayed"] == 1, "the retry's backoff",
                   timeout=60)  # fmt: skip
        waiting = samples(url)
        squares = [ex.submit(fns.square, x).result(60) for x in range(12)]
        assert squares == [x * x for x in range(12)]
        with pytest.raises(fns.CustomError):
            ex.submit(fns.boom, 1).result(60)
        with pytest.raises(WorkerLostError):
            ex.submit(fns.die, 1).result(90)  # takes down max_attempts=2 workers
        # A worker stopped with its task: its lease expires, another worker runs the task.
        held = ex.submit(fns.hold, hub.port, 7)
        _, pid = hub.next_started()
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: ex.status()["tasks"]["lease_expired"] == 1,
                       "the stopped worker's lease to expire", timeout=60)  # fmt: skip
        finally:
            os.kill(pid, signal.SIGKILL)
        hub.release()
        assert held.result(60) == 49
        assert retried.result(60) == "ok after 1"
        wait_until(lambda: len(ex.status()["workers"]) == 2, "the workers to be replaced",
                   timeout=60)  # fmt: skip
        found = samples(url)
    assert value(waiting, "distproc_queue_depth", queue="default", state="retrying") == 1
    assert value(found, "distproc_up") == 1
    assert value(found, "distproc_tasks_total", queue="default", outcome="done") == 14
    assert value(found, "distproc_tasks_total", queue="default", outcome="failed") == 1
    assert value(found, "distproc_tasks_total", queue="default", outcome="dead") == 1
    assert value(found, "distproc_dead_letters_total") == 1
    assert value(found, "distproc_lease_expired_total") == 1
    assert value(found, "distproc_results_discarded_total") == 0
    for state in ("queued", "leased", "retrying"):
        assert value(found, "distproc_queue_depth", queue="default", state=state) == 0
    assert value(found, "distproc_workers", state="active") == 2
    assert value(found, "distproc_worker_slots") == 2
    assert value(found, "distproc_masters") == 1
    assert value(found, "distproc_clients", protocol="native") >= 2
    # Every attempt that reported: 12 squares, boom, flaky twice (its retry), hold once.
    assert value(found, "distproc_task_duration_seconds_count") == 16
    assert value(found, "distproc_task_duration_seconds_bucket", le="+Inf") == 16
    assert value(found, "distproc_task_duration_seconds_sum") > 0
    bounds = [float(le) for (name, labels) in found
              if name == "distproc_task_duration_seconds_bucket"
              for key, le in labels if key == "le"]  # fmt: skip
    assert bounds == sorted(bounds) and bounds[-1] == float("inf")


def test_every_metric_is_documented_and_exposed() -> None:
    service = {"kind": "tasks", "tasks": {}, "workers": [], "masters": 0,
               "durations": Durations().to_wire()}  # fmt: skip
    report = {"uptime": 3.0, "objects": [], "clients": [], "services": [service]}
    exposed = {
        family.name + ("_total" if family.type == "counter" else "")  # the parser drops it
        for family in text_string_to_metric_families(render_metrics(report).decode())
    }
    names = {name for name, _, _, _ in METRICS}
    assert exposed == names
    readme = README.read_text(encoding="utf-8")
    documented = set(re.findall(r"`(distproc_[a-z_]+)(?:\{[^}]*\})?`", readme))
    assert names <= documented, names - documented


def test_a_report_that_cannot_be_had_is_up_0() -> None:
    families = list(text_string_to_metric_families(render_metrics(None).decode()))
    assert [(f.name, [s.value for s in f.samples]) for f in families] == [("distproc_up", [0.0])]


# ------------------------------------------------------------ the derived view
def tasks_report(done: int, workers: list[dict[str, Any]], pid: int = 1) -> dict[str, Any]:
    service = {"kind": "tasks", "address": "a:1", "pid": pid, "tasks": {"done": done},
               "workers": workers}  # fmt: skip
    return {"services": [service]}


def test_throughput_is_tasks_finished_per_second() -> None:
    history = History()
    for step in range(4):
        [view] = history.update(tasks_report(10 * step * int(BUCKET), []), 100.0 + step * BUCKET)
    assert view is not None
    assert [rate for _, rate in view["throughput"]] == [10.0, 10.0, 10.0]
    [reset] = history.update(tasks_report(0, []), 100.0 + 4 * BUCKET)
    assert reset is not None and reset["throughput"] == []  # the counts went back: a restart


def test_a_maps_eta_comes_from_its_rate() -> None:
    history = History()
    run = {"kind": "map", "id": 1, "function": "m:f", "total": 100}
    history.update({"services": [{**run, "done": 0}]}, 0.0)
    [view] = history.update({"services": [{**run, "done": 20}]}, 10.0)
    assert view == {"rate": 2.0, "eta": 40.0}
    [unknown] = History().update({"services": [{**run, "total": None, "done": 5}]}, 0.0)
    assert unknown == {"rate": None, "eta": None}
