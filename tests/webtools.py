"""What the dashboard's tests share: HTTP requests, a stand-in task service, servers with
a dashboard, and where screenshots go."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_fixtures import AUTHKEY, RunningServer, serve_in_thread

from distproc.server import Server
from distproc.web import HttpSide, attach, bind

#: The ``dashboard`` fixture: ``dashboard(service=None, token=None, **options)``.
DashboardFn = Callable[..., HttpSide]

#: Screenshots and other artefacts of the browser tests (listed in .gitignore).
RESULTS = Path(os.environ.get("DISTPROC_TEST_RESULTS", Path(__file__).parents[1] / "test-results"))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def request(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: Any = None,
    timeout: float = 10.0,
) -> Reply:
    """One HTTP request (no redirects followed, error statuses returned, not raised)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _opener.open(req, timeout=timeout) as resp:
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, dict(exc.headers), exc.read())


def csrf_of(url: str, headers: dict[str, str] | None = None) -> str:
    """The CSRF token in the page at ``url`` (what the page's requeue button sends)."""
    page = request(url, headers=headers).body.decode()
    marker = 'name="csrf-token" content="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


@dataclass
class StandIn:
    """A task service's report, with dead letters that :meth:`requeue` puts back: the
    task service's loop method that the dashboard calls (see ``REQUEUE_METHOD``)."""

    __distproc_loop_methods__ = frozenset({"requeue"})

    dead: list[dict[str, Any]] = field(default_factory=list)
    requeued: list[list[int]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __distproc_status__(self) -> dict[str, Any]:
        return {
            "kind": "tasks",
            "address": "stand-in",
            "pid": os.getpid(),
            "uptime": 1.0,
            "tasks": {
                "queued": 0, "leased": 0, "done": 0, "failed": 0, "dead": len(self.dead),
                "cancelled": 0, "discarded": 0,
            },
            "throughput_1m": 0.0,
            "masters": 0,
            "workers": [],
            "dead_letters": list(self.dead),
            **self.extra,
        }

    def requeue(self, call: Any, task_ids: list[int]) -> None:
        self.requeued.append(list(task_ids))
        found = [d["task"] for d in self.dead if d["task"] in task_ids]
        self.dead = [d for d in self.dead if d["task"] not in task_ids]
        call.reply(found)


def serve_with_dashboard(
    service: Any = None, *, token: str | None = None, **options: Any
) -> tuple[HttpSide, RunningServer]:
    """A manager server (in a thread) that reports ``service``, with a dashboard on 127.0.0.1."""
    server = Server({}, ("127.0.0.1", 0), AUTHKEY, "pickle")
    if service is not None:
        server.services.append(service)
    side = attach(server, bind(("127.0.0.1", 0)), AUTHKEY, token, **options)
    return side, serve_in_thread(server, name="test-dashboard")
