"""Fixtures of the dashboard's tests: servers with a dashboard, stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hub import Hub
from shared_fixtures import RunningServer
from webtools import DashboardFn, serve_with_dashboard

from distproc.web import HttpSide


@pytest.fixture
def dashboard() -> Iterator[DashboardFn]:
    """``dashboard(service=None, token=None, **options)``: a server that reports ``service``,
    with a dashboard; returns the dashboard (its ``url``, ``live``, ``access``)."""
    running: list[RunningServer] = []

    def start(service: Any = None, **options: Any) -> HttpSide:
        side, server = serve_with_dashboard(service, **options)
        running.append(server)
        return side

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def hub() -> Iterator[Hub]:
    """Tasks of :func:`dp_taskfns.hold` report to it and wait for its release."""
    with Hub() as running:
        yield running
