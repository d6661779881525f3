"""Fixtures of the interop tests: stdlib CPythons 3.8-3.13 against distproc.

* ``peer_python``: parametrized over every CPython 3.8 <= version < 3.14
  installed under ``$(pyenv root)/versions/*/bin/python3`` (ids ``py3.8``...);
  a machine without them skips these tests.
* ``stdlib_server`` / ``distproc_server``: factories that start a server
  script in a subprocess, wait for its ``PORT <n>`` line and kill it at the
  end of the test (which then fails if the server printed a traceback).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import DISTPROC_PYTHON, PeerPython, ServerProcess, find_peer_pythons, peer_argv

PEER_PYTHONS = find_peer_pythons()

StdlibServerFactory = Callable[..., ServerProcess]
DistprocServerFactory = Callable[..., ServerProcess]


@pytest.fixture(params=PEER_PYTHONS, ids=[p.id for p in PEER_PYTHONS])
def peer_python(request: pytest.FixtureRequest) -> PeerPython:
    """Each installed stdlib CPython (3.8-3.13) in turn."""
    peer: PeerPython = request.param
    return peer


@pytest.fixture
def authkey() -> bytes:
    return secrets.token_bytes(32)


def _stop_all(servers: list[ServerProcess]) -> None:
    """Kill every server; then fail if one of them printed a traceback."""
    try:
        for server in servers:
            server.stop()
    finally:
        for server in servers:
            text = server.stderr()
            if "Traceback" in text:
                pytest.fail(f"{server.name} printed a traceback on stderr:\n{text}")


@pytest.fixture
def stdlib_server(tmp_path: Path, authkey: bytes) -> Iterator[StdlibServerFactory]:
    """``stdlib_server(peer_python, serializer='pickle')`` → a ready stdlib server.

    It logs its handshakes: see :meth:`ServerProcess.handshakes`.
    """
    servers: list[ServerProcess] = []

    def start(peer: PeerPython, serializer: str = "pickle") -> ServerProcess:
        n = len(servers)
        log = tmp_path / f"stdlib-server-{n}-handshakes.jsonl"
        argv = [*peer_argv(str(peer.path), "stdlib_server"), "--authkey", authkey.hex()]
        argv += ["--serializer", serializer, "--handshake-log", str(log)]
        server = ServerProcess.start(
            f"stdlib {peer.id} server",
            argv,
            tmp_path / f"stdlib-server-{n}.stderr",
            authkey,
            serializer,
            log,
        )
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    _stop_all(servers)


@pytest.fixture
def distproc_server(tmp_path: Path, authkey: bytes) -> Iterator[DistprocServerFactory]:
    """``distproc_server(serializer='pickle', allow_md5=True)`` → a ready distproc server."""
    servers: list[ServerProcess] = []

    def start(serializer: str = "pickle", allow_md5: bool = True) -> ServerProcess:
        n = len(servers)
        argv = [*peer_argv(DISTPROC_PYTHON, "distproc_server"), "--authkey", authkey.hex()]
        argv += ["--serializer", serializer]
        if not allow_md5:
            argv.append("--no-md5")
        server = ServerProcess.start(
            "distproc server", argv, tmp_path / f"distproc-server-{n}.stderr", authkey, serializer
        )
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    _stop_all(servers)
