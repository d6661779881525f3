"""The dashboard's HTTP side against real servers: the report, credentials, CSRF, requeue,
and a slow client that holds nothing."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from shared_fixtures import AUTHKEY, wait_until
from webtools import DashboardFn, StandIn, csrf_of, request

from distproc.cli.status import fetch_status
from distproc.managers import BaseManager
from distproc.web import derive_token

TOKEN = "a-token-of-the-test-0123456789"
DEAD = {"task": 17, "function": "jobs:crunch", "reason": "took down 3 worker(s): ...",
        "attempts": [["w1 (a pid 1)", "connection lost"]], "at": 1.0}  # fmt: skip


# ------------------------------------------------------------------ the report
def test_the_json_is_the_report_of_distproc_status(dashboard: DashboardFn) -> None:
    side = dashboard(StandIn(dead=[dict(DEAD)]))
    ours = request(side.url + "api/status").json()
    address = tuple(ours["address"].rsplit(":", 1))
    theirs = fetch_status((address[0], int(address[1])), AUTHKEY)
    BaseManager(address=(address[0], int(address[1]))).close_connections()
    assert ours.keys() == theirs.keys()
    assert ours["services"] == json.loads(json.dumps(theirs["services"]))
    assert ours["objects"] == theirs["objects"]


def test_no_task_payload_leaves_the_process(dashboard: DashboardFn) -> None:
    letter = {**DEAD, "args": ["secret-argument"], "result": "secret-result"}
    side = dashboard(StandIn(dead=[letter]))
    shown = request(side.url + "api/status").body.decode()
    assert "jobs:crunch" in shown
    assert "secret" not in shown
    with socket.create_connection(side.address, timeout=10) as sock:
        sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        stream = sock.makefile("rb")
        line = b""
        while not line.startswith(b"data: "):
            line = stream.readline()
    update = json.loads(line[len(b"data: ") :])
    assert update["report"]["services"][0]["dead_letters"][0]["function"] == "jobs:crunch"
    assert b"secret" not in line


def test_health_and_unknown_routes(dashboard: DashboardFn) -> None:
    side = dashboard()
    health = request(side.url + "health")
    assert (health.status, health.json()) == (200, {"status": "ok"})
    missing = request(side.url + "nowhere")
    assert missing.status == 404
    assert missing.headers["X-Frame-Options"] == "DENY"


# ----------------------------------------------------------------- credentials
@pytest.mark.parametrize("path", ["", "api/status", "api/events", "metrics"])
def test_a_dashboard_with_a_token_refuses_requests_without_it(
    dashboard: DashboardFn, path: str
) -> None:
    side = dashboard(token=TOKEN)
    refused = request(side.url + path)
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert request(side.url + path, headers={"Authorization": "Bearer wrong"}).status == 401
    if path != "api/events":
        assert request(side.url + path, headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
    assert request(side.url + "health").status == 200  # for load balancers: it tells nothing


def test_a_browser_without_the_token_gets_a_form_asking_for_it(dashboard: DashboardFn) -> None:
    side = dashboard(token=TOKEN)
    page = request(side.url, headers={"Accept": "text/html"})
    assert page.status == 401
    assert b'name="token"' in page.body and TOKEN.encode() not in page.body


def test_the_token_in_the_address_becomes_a_cookie(dashboard: DashboardFn) -> None:
    side = dashboard(token=TOKEN)
    moved = request(side.url + f"api/status?token={TOKEN}")
    assert moved.status == 303
    assert moved.headers["Location"] == "/api/status"
    cookie = moved.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    name_value = cookie.split(";", 1)[0]
    assert name_value == f"{side.access.cookie}={TOKEN}"
    assert request(side.url + "api/status", headers={"Cookie": name_value}).status == 200
    wrong = f"{side.access.cookie}=not-the-token"
    assert request(side.url + "api/status", headers={"Cookie": wrong}).status == 401


def test_the_token_is_derived_from_the_authkey_on_a_non_loopback_address() -> None:
    from distproc.web import Access, needs_credentials

    assert not needs_credentials("127.0.0.1") and not needs_credentials("127.3.4.5")
    assert not needs_credentials("::1") and not needs_credentials("localhost")
    for host in ("0.0.0.0", "::", "198.18.0.1", "10.1.2.3", "example.org"):
        assert needs_credentials(host)
        access = Access.for_bind(host, 8080, AUTHKEY)
        assert access.token == derive_token(AUTHKEY)
    assert Access.for_bind("127.0.0.1", 8080, AUTHKEY).token is None
    assert Access.for_bind("127.0.0.1", 8080, AUTHKEY, TOKEN).token == TOKEN
    assert derive_token(AUTHKEY) != derive_token(AUTHKEY + b"x")
    assert AUTHKEY.hex() not in derive_token(AUTHKEY)


def test_an_open_loopback_dashboard_answers_only_to_a_loopback_host(
    dashboard: DashboardFn,
) -> None:
    # A page of another site whose name resolves to 127.0.0.1 (DNS rebinding) names its own host.
    side = dashboard(StandIn(dead=[dict(DEAD)]))
    port = side.address[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert request(side.url + "api/status", headers={"Host": host}).status == 200
    rebound = request(side.url + "api/status", headers={"Host": f"evil.example:{port}"})
    assert rebound.status == 403
    assert b"jobs:crunch" not in rebound.body


# -------------------------------------------------------------- requeue, CSRF
def test_the_requeue_action_needs_the_pages_csrf_token(dashboard: DashboardFn) -> None:
    stand_in = StandIn(dead=[dict(DEAD)])
    side = dashboard(stand_in)
    url = side.url + "api/requeue"
    body = {"tasks": [17]}
    assert request(url, method="POST", body=body).status == 403
    assert request(url, method="POST", body=body, headers={"X-CSRF-Token": "guess"}).status == 403
    csrf = csrf_of(side.url)
    other_site = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    assert request(url, method="POST", body=body, headers=other_site).status == 403
    cross = {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
    assert request(url, method="POST", body=body, headers=cross).status == 403
    assert stand_in.requeued == []
    bad = request(url, method="POST", body={"tasks": "17"}, headers={"X-CSRF-Token": csrf})
    assert bad.status == 400
    assert request(url, headers={"X-CSRF-Token": csrf}).status == 405  # a GET changes nothing
    done = request(url, method="POST", body={"tasks": [17, 99]}, headers={"X-CSRF-Token": csrf})
    assert (done.status, done.json()) == (200, {"requeued": [17], "missing": [99]})
    assert stand_in.requeued == [[17, 99]]
    wait_until(
        lambda: request(side.url + "api/status").json()["services"][0]["dead_letters"] == [],
        "the dead letter to leave the report",
    )


def test_a_service_that_cannot_requeue_says_so(dashboard: DashboardFn) -> None:
    class Plain:
        def __distproc_status__(self) -> dict[str, Any]:
            return {"kind": "tasks", "dead_letters": [dict(DEAD)]}

    side = dashboard(Plain())
    csrf = csrf_of(side.url)
    answer = request(side.url + "api/requeue", method="POST", body={"tasks": [17]},
                     headers={"X-CSRF-Token": csrf})  # fmt: skip
    assert answer.status == 501
    assert "cannot requeue" in answer.json()["error"]


# --------------------------------------------------------- nothing blocks the loop
@pytest.mark.slow
def test_a_client_that_never_reads_holds_nothing(dashboard: DashboardFn) -> None:
    # A big report, every 20 ms: a stream that is never read fills its socket buffers fast.
    stand_in = StandIn(extra={"padding": "x" * 200_000})
    side = dashboard(stand_in, interval=0.02, write_timeout=1.0)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(side.address)
    stuck.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    try:
        wait_until(lambda: side.live.watchers == 1, "the stream to open")
        # While its writes wait, everyone else is served: pages, and the native protocol.
        host, port = request(side.url + "api/status").json()["address"].rsplit(":", 1)
        for _ in range(5):
            assert request(side.url + "health").status == 200
            assert fetch_status((host, int(port)), AUTHKEY)["services"][0]["kind"] == "tasks"
        BaseManager(address=(host, int(port))).close_connections()
        # Its writes made no progress for write_timeout: the stream is dropped.
        wait_until(lambda: side.live.watchers == 0, "the stuck stream to be dropped", timeout=30)
    finally:
        stuck.close()
    assert request(side.url + "health").status == 200


def test_a_client_that_sends_half_a_request_holds_nothing(dashboard: DashboardFn) -> None:
    side = dashboard(StandIn())
    with socket.create_connection(side.address, timeout=10) as slow:
        slow.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0")
        for _ in range(3):  # each within request()'s timeout, while the half request waits
            assert request(side.url + "api/status").status == 200
