"""While installed, what distproc pickles still names the stdlib's globals.

A stdlib peer of another CPython (3.12, skipped when absent) must load what an
installed process sends, and the other way round: ``RebuildProxy``, ``Token``,
the proxy classes, ``Namespace`` and ``Value`` travel as
``multiprocessing.managers.<name>``.  The programs on both sides are the same
stdlib-only code (``peers/sync_server.py``, ``peers/sync_client.py``),
run by the peer's interpreter or under ``python -m distproc.run``.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from shared_fixtures import ServeFn

import distproc
from distproc.managers import Namespace, SyncManager, Token, Value
from distproc.wire.codecs import PickleCodec

from .harness import ServerProcess, find_peer_pythons, run_json_program

PROGRAMS = Path(__file__).resolve().parent / "peers"
PEER = next((p for p in find_peer_pythons() if p.version[:3] == (3, 12, 1)), None)
needs_peer = pytest.mark.skipif(PEER is None, reason="CPython 3.12.1 is not installed")

EXPECTED = {
    "send a proxy": None,
    "proxy sent back": 1,
    "token of a #PROXY reply": ["a"],
    "namespace by value": 2,
    "value by value": 3,
}

Runner = Callable[[str], list[str]]


def under_distproc(program: str) -> list[str]:
    return [sys.executable, "-m", "distproc.run", str(PROGRAMS / program)]


def with_peer(program: str) -> list[str]:
    assert PEER is not None
    return [str(PEER.path), str(PROGRAMS / program)]


@pytest.fixture
def peer_server(tmp_path: Path) -> Iterator[Callable[[Runner, bytes], ServerProcess]]:
    servers: list[ServerProcess] = []

    def start(runner: Runner, authkey: bytes) -> ServerProcess:
        argv = [*runner("sync_server.py"), authkey.hex()]
        stderr = tmp_path / f"server-{len(servers)}.stderr"
        server = ServerProcess.start("sync_server.py", argv, stderr, authkey, "pickle")
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


def client(runner: Runner, port: int, authkey: bytes) -> dict[str, Any]:
    result: dict[str, Any] = run_json_program([*runner("sync_client.py"), str(port), authkey.hex()])
    return result


@needs_peer
@pytest.mark.parametrize(
    ("server_side", "client_side"),
    [
        pytest.param(with_peer, with_peer, id="stdlib-server-stdlib-client"),
        pytest.param(under_distproc, with_peer, id="installed-server"),
        pytest.param(with_peer, under_distproc, id="installed-client"),
    ],
)
def test_every_name_travels_to_a_stdlib_peer(
    peer_server: Any, server_side: Runner, client_side: Runner
) -> None:
    """Between two stdlib 3.12 processes (the scenario itself), and with an installed one."""
    key = secrets.token_bytes(16)
    server = peer_server(server_side, key)
    assert client(client_side, server.port, key) == EXPECTED


def wire_objects() -> list[Any]:
    return [Token("dict", ("127.0.0.1", 5000), "1"), Namespace(x=1), Value("i", 2)]


def assert_stdlib_names(payload: bytes) -> None:
    assert b"multiprocessing.managers" in payload
    assert b"distproc" not in payload


def test_the_codec_writes_stdlib_names() -> None:
    for obj in wire_objects():
        assert_stdlib_names(PickleCodec().dumps(obj))


def test_installed_or_not_the_same_bytes_go_on_the_wire(serve: ServeFn) -> None:
    """Tokens, namespaces, values and proxies pickle to the same bytes while
    installed, naming the stdlib's globals; and they load back as distproc's."""
    _, manager = serve(SyncManager)
    proxies = [manager.dict(), manager.list(), manager.Event(), manager.Lock(), manager.Queue()]
    objects = [*wire_objects(), *proxies]
    codec = PickleCodec()
    plain = [codec.dumps(obj) for obj in objects]
    distproc.install()
    try:
        assert [codec.dumps(obj) for obj in objects] == plain
        for payload in plain:
            assert_stdlib_names(payload)
        for obj, payload in zip(wire_objects(), plain, strict=False):
            assert type(codec.loads(payload)) is type(obj)
    finally:
        distproc.uninstall()
    assert Token.__module__ == "distproc.wire.messages"  # each object's own module is back
