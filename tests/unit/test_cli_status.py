"""``distproc status``: against real servers (distproc, stdlib, a task service)."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import multiprocessing
import multiprocessing.managers
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from distproc.cli.main import cli
from distproc.cli.status import Unreachable, _watch
from distproc.cli.status_view import MAX_ROWS, duration, render
from distproc.managers import BaseManager
from distproc.server import Server

AUTHKEY = "unit-test-key"  # the serve fixture's (conftest.py)
ServeFn = Callable[..., tuple[Server, BaseManager]]


class Service:
    """An object that reports its status, as the task service does."""

    def __distproc_status__(self) -> dict[str, Any]:
        return {"kind": "example", "ok": True}

    def ping(self) -> str:
        return "pong"


class Failing:
    def __distproc_status__(self) -> dict[str, Any]:
        raise RuntimeError("cannot tell\nsecond line")


_service = Service()


def get_service() -> Service:
    return _service


class StatusManager(BaseManager):
    pass


StatusManager.register("Dict", callable=dict)
StatusManager.register("Service", callable=get_service)
StatusManager.register("Failing", callable=Failing)

TASKS = {
    "kind": "tasks",
    "tasks": {"queued": 5, "leased": 2, "done": 120, "failed": 1, "dead": 1},
    "throughput_1m": 2.25,
    "masters": 1,
    "workers": [
        {
            "id": "w1",
            "host": "node-a",
            "pid": 4242,
            "slots": 4,
            "done": 77,
            "leased": 2,
            "oldest_running": 75.0,
            "connected_for": 7300.0,
        },
        {
            "id": "w2",
            "host": "node-b",
            "pid": 99,
            "slots": 1,
            "done": 43,
            "leased": 0,
            "oldest_running": None,
            "connected_for": 12.5,
        },
    ],
    "dead_letters": [{"task": 17, "function": "jobs:crunch", "reason": "killed 3 workers"}],
}


@pytest.fixture
def runner() -> CliRunner:
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg,unused-ignore]  # click < 8.2
    return CliRunner()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    logger = logging.getLogger("distproc")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def status(runner: CliRunner, *args: str, key: str | None = AUTHKEY) -> Result:
    return runner.invoke(cli, ["status", *args], env={"DISTPROC_AUTHKEY": key})


def where(address: Any) -> str:
    return f"{address[0]}:{address[1]}"


def one_line_error(result: Result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    assert result.stdout == ""
    # The servers of these tests run in this process: their log lines are not the command's.
    lines = [line for line in result.stderr.splitlines() if " distproc.server: " not in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("distproc: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def text_of(renderable: Any) -> str:
    console = Console(record=True, width=160, file=open(os.devnull, "w"))  # noqa: SIM115
    with contextlib.closing(console.file):
        console.print(renderable)
    return console.export_text()


# ----------------------------------------------------------- a plain manager
def test_objects_and_clients_of_a_manager(runner: CliRunner, serve: ServeFn) -> None:
    server, client = serve(StatusManager)
    held = [client.Dict(), client.Dict(), client.Service()]  # type: ignore[attr-defined]
    result = status(runner, where(server.address), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "manager"
    assert report["address"] == where(server.address)
    assert report["pid"] == os.getpid()
    assert report["uptime"] >= 0
    assert [(o["typeid"], o["refcount"]) for o in report["objects"]] == [
        ("Dict", 1),
        ("Dict", 1),
        ("Service", 1),
    ]
    assert report["services"] == [{"kind": "example", "ok": True}]
    protocols = [c["protocol"] for c in report["clients"]]
    assert protocols.count("native") >= 1
    assert all(c["connected_for"] >= 0 for c in report["clients"])
    # Native clients on this host moved to the same-host socket (distproc.wire.local):
    # the server names them by their process.  The others came over loopback TCP.
    for c in report["clients"]:
        if c["protocol"] == "native" and sys.platform.startswith("linux"):
            assert c["peer"] == f"local process {os.getpid()}"
        else:
            assert re.fullmatch(r"127\.0\.0\.1:\d+", c["peer"])

    table = status(runner, where(server.address))
    assert table.exit_code == 0, table.stderr
    assert f"distproc manager at {where(server.address)} · pid {os.getpid()}" in table.stdout
    assert "Objects (3)" in table.stdout and "Dict" in table.stdout
    assert "Clients (" in table.stdout and "native" in table.stdout
    del held


def test_stdlib_clients_are_listed_too(runner: CliRunner, serve: ServeFn) -> None:
    server, _ = serve(StatusManager)

    class Stdlib(multiprocessing.managers.BaseManager):
        pass

    Stdlib.register("Dict")
    stdlib = Stdlib(address=server.address, authkey=AUTHKEY.encode())
    stdlib.connect()
    proxy = stdlib.Dict()  # type: ignore[attr-defined]
    proxy.update(x=1)  # its channel stays open
    report = json.loads(status(runner, where(server.address), "--json").stdout)
    assert "stdlib" in [c["protocol"] for c in report["clients"]]
    del proxy


def test_one_report_per_service_object(serve: ServeFn) -> None:
    server, client = serve(StatusManager)
    held = [client.Service(), client.Service(), client.Failing()]  # type: ignore[attr-defined]
    assert server.loop is not None
    report = server.status(None)
    assert report["services"] == [
        {"kind": "example", "ok": True},
        {"kind": "error", "typeid": "Failing", "error": "RuntimeError: cannot tell"},
    ]
    server.services.append(_service)  # reported even when nobody holds it: still once
    assert server.status(None)["services"][0] == {"kind": "example", "ok": True}
    assert len(server.status(None)["services"]) == 2
    del held


# ----------------------------------------------------------- a stdlib server
def test_a_stdlib_server_falls_back_to_debug_info(runner: CliRunner) -> None:
    manager = multiprocessing.managers.SyncManager(
        address=("127.0.0.1", 0),
        authkey=AUTHKEY.encode(),
        ctx=multiprocessing.get_context("spawn"),
    )
    manager.start()
    try:
        shared = manager.dict()
        shared["k"] = "v"
        result = status(runner, where(manager.address), "--json")
        table = status(runner, where(manager.address))
    finally:
        manager.shutdown()
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["fallback"] == "debug_info"
    assert "stdlib" in report["note"] and "debug_info" in report["note"]
    assert report["clients"] is None and report["pid"] is None
    assert report["number_of_objects"] == 1
    [entry] = report["objects"]
    assert entry["refcount"] >= 1 and entry["repr"] == "{'k': 'v'}"
    assert table.exit_code == 0
    assert "stdlib multiprocessing.managers server" in table.stdout
    assert "{'k': 'v'}" in table.stdout


# -------------------------------------------------------------- the view
def test_a_task_service_is_drawn_as_tasks_workers_and_dead_letters() -> None:
    report = {
        "kind": "manager",
        "address": "10.0.0.1:5000",
        "pid": 1,
        "uptime": 3.0,
        "objects": [],
        "clients": [],
        "services": [TASKS],
    }
    text = text_of(render(report))
    assert "queued 5  leased 2  done 120  failed 1  dead 1" in text
    assert "2.2 tasks/s over the last minute" in text
    assert "1 master" in text
    assert re.search(r"w1 .*node-a .*4242 .*4 .*77 .*2 .*1m15s .*2h01m", text)
    assert re.search(r"w2 .*node-b .*99 .*1 .*43 .*0 .* - .*12\.5s", text)
    assert re.search(r"17 .*jobs:crunch .*killed 3 workers", text)


def test_long_tables_are_cut() -> None:
    objects = [{"id": str(i), "typeid": "t", "refcount": 1} for i in range(MAX_ROWS + 5)]
    text = text_of(render({"address": "x", "objects": objects, "clients": []}))
    assert f"Objects ({MAX_ROWS + 5})" in text
    assert "... 5 more; --json lists them all" in text
    assert f"│ {MAX_ROWS - 1} │" in text and f"│ {MAX_ROWS} │" not in text


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (0.04, "0.0s"),
        (59.9, "59.9s"),
        (61, "1m01s"),
        (3661, "1h01m"),
        (90000, "1d01h"),
    ],
)
def test_duration(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown


def test_watch_says_when_the_server_cannot_be_reached(caplog: pytest.LogCaptureFixture) -> None:
    replies: list[Any] = [Unreachable("cannot connect to x: connection refused"), {"n": 2}]

    def fetch() -> dict[str, Any]:
        reply = replies.pop(0) if replies else KeyboardInterrupt()
        if isinstance(reply, BaseException):
            raise reply
        return reply  # type: ignore[no-any-return]

    shown: list[str] = []
    with pytest.raises(KeyboardInterrupt), caplog.at_level(logging.WARNING, "distproc.cli"):
        _watch(fetch, {"n": 1}, 0.001, True, Console(), emit=shown.append)
    assert [json.loads(line) for line in shown] == [{"n": 1}, {"n": 2}]
    assert caplog.messages == ["cannot connect to x: connection refused; trying again in 0.001s"]


# ---------------------------------------------------------------- errors
def test_a_wrong_authkey_is_one_line(runner: CliRunner, serve: ServeFn) -> None:
    server, _ = serve(StatusManager)
    result = status(runner, where(server.address), key="not the key")
    one_line_error(result, 1, "did not accept the authkey", "DISTPROC_AUTHKEY")


def test_a_refused_connection_is_one_line(runner: CliRunner) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    result = status(runner, f"127.0.0.1:{port}")
    one_line_error(result, 1, f"cannot connect to 127.0.0.1:{port}: connection refused")


@pytest.mark.parametrize(
    ("args", "key", "fragment"),
    [
        (["127.0.0.1:1"], None, "no authkey: set DISTPROC_AUTHKEY or use --authkey-file"),
        (["nowhere"], AUTHKEY, "bad address 'nowhere'"),
        (["127.0.0.1:1", "--authkey", "k"], AUTHKEY, "--authkey is not accepted"),
    ],
)
def test_usage_errors_are_one_line(
    runner: CliRunner, args: list[str], key: str | None, fragment: str
) -> None:
    one_line_error(status(runner, *args, key=key), 2, fragment)


# -------------------------------------------------------- for real, end to end
def environ(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DISTPROC_AUTHKEY"}
    env.update(changes)
    return env


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("flags", "stop_with"), [(["--json"], signal.SIGINT), ([], signal.SIGTERM)]
)
def test_watch_end_to_end(serve: ServeFn, flags: list[str], stop_with: signal.Signals) -> None:
    server, client = serve(StatusManager)
    held = client.Dict()  # type: ignore[attr-defined]
    with subprocess.Popen(
        [sys.executable, "-m", "distproc", "status", where(server.address), "--watch",
         "--interval", "0.1", *flags],
        env=environ(DISTPROC_AUTHKEY=AUTHKEY), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            if flags:
                reports = [json.loads(proc.stdout.readline()) for _ in range(2)]
                assert all(r["objects"][0]["typeid"] == "Dict" for r in reports)
            else:  # not a terminal: one report after another, each ending with a footer
                shown = ""
                while shown.count("every 0.1s") < 2:
                    line = proc.stdout.readline()
                    assert line, shown
                    shown += line
                assert shown.count("Objects (1)") == 2 and "Dict" in shown
            proc.send_signal(stop_with)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert (proc.returncode, err) == (0, "")
    del held


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_status_of_a_running_map(tmp_path: Path, runner: CliRunner) -> None:
    # --chunksize 1: a task per line, so that the counts are of lines.
    (tmp_path / "naps.py").write_text(
        "import time\n\ndef nap(x):\n    time.sleep(0.01 if x < 3 else 60)\n    return x\n"
    )
    with subprocess.Popen(
        [sys.executable, "-m", "distproc", "map", "naps:nap", "-w", "1", "--chunksize", "1",
         "--address", "127.0.0.1:0", "--no-progress"],
        cwd=tmp_path, env=environ(DISTPROC_AUTHKEY=AUTHKEY), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdin is not None and proc.stdout is not None
            assert proc.stderr is not None
            found = re.search(r"distproc worker (\S+)$", proc.stderr.readline())
            assert found
            proc.stdin.write("".join(f"{i}\n" for i in range(10)))
            proc.stdin.close()
            assert [proc.stdout.readline() for _ in range(3)] == ["0\n", "1\n", "2\n"]
            result = status(runner, found[1], "--json")
            table = status(runner, found[1])
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(30) == 130
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert result.exit_code == 0, result.stderr
    [tasks] = [s for s in json.loads(result.stdout)["services"] if s["kind"] == "tasks"]
    assert tasks["tasks"]["done"] == 3
    assert tasks["tasks"]["leased"] + tasks["tasks"]["queued"] == 7
    [worker] = tasks["workers"]
    assert worker["done"] == 3 and worker["leased"] >= 1
    assert worker["oldest_running"] >= 0
    assert "distproc task service at" in table.stdout
    assert "Workers (1)" in table.stdout
    assert "done 3" in table.stdout
