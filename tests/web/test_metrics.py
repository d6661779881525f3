"""``/metrics`` against a real task service with real workers, read with prometheus_client's
own parser; and the derived view (throughput, lost workers, a map's ETA)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dp_taskfns as fns
import pytest
from prometheus_client.parser import text_string_to_metric_families
from shared_fixtures import wait_until
from webtools import request

import distproc
from distproc.errors import WorkerLostError
from distproc.web import METRICS, render_metrics
from distproc.web.history import BUCKET, GONE_KEPT, History

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
def test_metrics_count_what_the_service_did() -> None:
    with distproc.Executor(workers=2, max_attempts=2, http=("127.0.0.1", 0),
                           progress=False) as ex:  # fmt: skip
        assert ex.dashboard_url is not None
        assert [ex.submit(fns.square, x).result(60) for x in range(12)] == [x * x for x in range(12)]
        with pytest.raises(fns.CustomError):
            ex.submit(fns.boom, 1).result(60)
        with pytest.raises(WorkerLostError):
            ex.submit(fns.die, 1).result(90)
        wait_until(lambda: len(ex.status()["workers"]) == 2, "the workers to be replaced",
                   timeout=60)  # fmt: skip
        found = samples(ex.dashboard_url)
    assert value(found, "distproc_up") == 1
    assert value(found, "distproc_tasks_total", queue="default", outcome="done") == 12
    assert value(found, "distproc_tasks_total", queue="default", outcome="failed") == 1
    assert value(found, "distproc_tasks_total", queue="default", outcome="dead") == 1
    assert value(found, "distproc_dead_letters_total") == 1
    assert value(found, "distproc_queue_depth", queue="default", state="queued") == 0
    assert value(found, "distproc_queue_depth", queue="default", state="leased") == 0
    assert value(found, "distproc_workers", state="active") == 2
    assert value(found, "distproc_worker_slots") == 2
    assert value(found, "distproc_masters") == 1
    assert value(found, "distproc_clients", protocol="native") >= 2


def test_every_metric_is_documented_and_exposed() -> None:
    report = {
        "uptime": 3.0, "objects": [], "clients": [],
        "services": [{"kind": "tasks", "tasks": {}, "workers": [], "masters": 0}],
    }  # fmt: skip
    exposed = {
        family.name + ("_total" if family.type == "counter" else "")
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


def test_a_worker_that_goes_is_kept_with_how_it_ended() -> None:
    history = History()
    w1 = {"id": "w1", "host": "h", "pid": 5, "slots": 1, "done": 3, "leaving": False}
    w2 = {"id": "w2", "host": "h", "pid": 6, "slots": 1, "done": 4, "leaving": True}
    history.update(tasks_report(0, [w1, w2]), 0.0)
    [view] = history.update(tasks_report(0, []), 1.0)
    assert view is not None
    assert [(w["id"], w["ended"]) for w in view["gone_workers"]] == [("w2", "left"), ("w1", "lost")]
    [later] = history.update(tasks_report(0, []), 2.0 + GONE_KEPT)
    assert later is not None and later["gone_workers"] == []
    [other] = history.update(tasks_report(0, [w1], pid=2), 3.0 + GONE_KEPT)  # another process
    assert other is not None and other["gone_workers"] == []


def test_a_maps_eta_comes_from_its_rate() -> None:
    history = History()
    run = {"kind": "map", "id": 1, "function": "m:f", "total": 100}
    history.update({"services": [{**run, "done": 0}]}, 0.0)
    [view] = history.update({"services": [{**run, "done": 20}]}, 10.0)
    assert view == {"rate": 2.0, "eta": 40.0}
    [unknown] = History().update({"services": [{**run, "total": None, "done": 5}]}, 0.0)
    assert unknown == {"rate": None, "eta": None}
