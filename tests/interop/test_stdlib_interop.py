"""distproc.managers against real stdlib ``multiprocessing.managers`` peers.

Every test runs once per installed CPython 3.8-3.13 (``peer_python``): a
stdlib client (subprocess) against a distproc server (subprocess of the dev
interpreter), and the distproc client (this process) against a stdlib server
(subprocess).  3.8-3.11 peers use the legacy handshake (20-byte challenge,
raw HMAC-MD5), 3.12+ peers the ``{sha256}`` one; each handshake is recorded
frame by frame on the stdlib side and compared with what a stdlib peer of the
other form would have sent.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
from typing import Any

import pytest

import distproc.aio
from distproc import managers as distproc_managers
from distproc.client.connection import Client
from distproc.client.mux_cache import get_multiplexer
from distproc.errors import AuthenticationError, DistprocError

from .conftest import DistprocServerFactory, StdlibServerFactory
from .harness import PeerPython, run_stdlib_client
from .peers import peer_common

#: Real interpreters in subprocesses, six versions over: seconds in all.
pytestmark = pytest.mark.slow

#: distproc speaks the 3.12+ forms: it challenges with ``{sha256}``.
DISTPROC_MODERN = True


def distproc_connect(port: int, authkey: bytes, serializer: str = "pickle") -> Any:
    """A connected ``distproc.managers.BaseManager`` that knows the peers' typeids."""

    class Manager(distproc_managers.BaseManager):
        pass

    peer_common.register_client_typeids(Manager, distproc_managers.DictProxy)
    manager: Any = Manager(address=(peer_common.HOST, port), authkey=authkey, serializer=serializer)
    manager.connect()
    return manager


def dict_round_trip(manager: Any) -> dict[str, Any]:
    d = manager.Dict()
    d["ok"] = 1
    copy: dict[str, Any] = d.copy()
    del d
    return copy


def rejected_answer(peer: PeerPython) -> dict[str, str]:
    """The stdlib client's record of an answer that a distproc server refused."""
    theirs = peer_common.expected_handshake(DISTPROC_MODERN, peer.modern_handshake)
    return {
        "received_challenge": theirs["challenge"],
        "sent_response": theirs["response"],
        "received_verdict": "#FAILURE#",
        "outcome": "AuthenticationError",
    }


# ------------------------------------------------ stdlib client → distproc server
@pytest.mark.parametrize("serializer", ["pickle", "xmlrpclib"])
def test_stdlib_client_to_distproc_server(
    peer_python: PeerPython,
    distproc_server: DistprocServerFactory,
    authkey: bytes,
    serializer: str,
) -> None:
    server = distproc_server(serializer)

    result = run_stdlib_client(peer_python, "scenario", server.port, authkey, serializer)

    assert result["python"] == "{}.{}".format(*peer_python.version)
    assert result["scenario"] == peer_common.expected_scenario(serializer)
    expected = peer_common.expected_transcript(peer_python.modern_handshake, DISTPROC_MODERN)
    assert result["handshakes"], "the client recorded no handshake"
    assert [h for h in result["handshakes"] if h != expected] == []


def test_stdlib_client_connect_handshake(
    peer_python: PeerPython, distproc_server: DistprocServerFactory, authkey: bytes
) -> None:
    server = distproc_server()

    result = run_stdlib_client(peer_python, "connect", server.port, authkey)

    assert result["connected"] is True
    assert result["dict"] == {"ok": 1}
    expected = peer_common.expected_transcript(peer_python.modern_handshake, DISTPROC_MODERN)
    assert result["handshakes"][0] == expected  # connect()'s own handshake
    assert [h for h in result["handshakes"] if h != expected] == []


def test_stdlib_client_wrong_authkey(
    peer_python: PeerPython, distproc_server: DistprocServerFactory, authkey: bytes
) -> None:
    server = distproc_server()
    wrong = secrets.token_bytes(32)

    bad = run_stdlib_client(peer_python, "connect", server.port, wrong)

    assert bad["connected"] is False
    assert bad["error"] == "AuthenticationError"
    assert bad["handshakes"] == [rejected_answer(peer_python)]

    good = run_stdlib_client(peer_python, "connect", server.port, authkey)
    assert good["connected"] is True
    assert good["dict"] == {"ok": 1}


def test_distproc_server_without_md5(
    peer_python: PeerPython, distproc_server: DistprocServerFactory, authkey: bytes
) -> None:
    """``ServerConfig(allow_md5=False)`` refuses 3.8-3.11 clients, accepts 3.12+ ones."""
    server = distproc_server(allow_md5=False)

    result = run_stdlib_client(peer_python, "connect", server.port, authkey)

    if peer_python.modern_handshake:
        assert result["connected"] is True
        assert result["dict"] == {"ok": 1}
        expected = peer_common.expected_transcript(True, DISTPROC_MODERN)
        assert [h for h in result["handshakes"] if h != expected] == []
    else:
        assert result["connected"] is False
        assert result["error"] == "AuthenticationError"
        assert result["handshakes"] == [rejected_answer(peer_python)]
    # and the server still serves a {sha256} client
    manager = distproc_connect(server.port, authkey)
    assert dict_round_trip(manager) == {"ok": 1}


def test_stdlib_client_shuts_down_distproc_server(
    peer_python: PeerPython, distproc_server: DistprocServerFactory, authkey: bytes
) -> None:
    server = distproc_server()

    result = run_stdlib_client(peer_python, "shutdown", server.port, authkey)

    assert result["shutdown"] is None
    assert server.proc.wait(timeout=10) == 0


# ------------------------------------------------ distproc client → stdlib server
@pytest.mark.parametrize("serializer", ["pickle", "xmlrpclib"])
def test_distproc_client_to_stdlib_server(
    peer_python: PeerPython,
    stdlib_server: StdlibServerFactory,
    authkey: bytes,
    serializer: str,
) -> None:
    server = stdlib_server(peer_python, serializer)

    result = peer_common.run_scenario(distproc_managers, server.port, authkey, serializer)

    assert result == peer_common.expected_scenario(serializer)
    # The first connection is the distproc client's connect(); the object
    # counts of the scenario then come from this process's stdlib client.
    expected = peer_common.expected_transcript(peer_python.modern_handshake, DISTPROC_MODERN)
    assert server.handshakes()[0] == expected


def test_distproc_client_connect_handshake(
    peer_python: PeerPython, stdlib_server: StdlibServerFactory, authkey: bytes
) -> None:
    server = stdlib_server(peer_python)

    manager = distproc_connect(server.port, authkey)
    assert dict_round_trip(manager) == {"ok": 1}

    handshakes = server.handshakes()
    expected = peer_common.expected_transcript(peer_python.modern_handshake, DISTPROC_MODERN)
    assert handshakes, "the server recorded no handshake"
    assert [h for h in handshakes if h != expected] == []


def test_distproc_client_wrong_authkey(
    peer_python: PeerPython, stdlib_server: StdlibServerFactory, authkey: bytes
) -> None:
    server = stdlib_server(peer_python)

    with pytest.raises(multiprocessing.AuthenticationError):
        distproc_connect(server.port, secrets.token_bytes(32))

    # The server logs its side after sending #FAILURE#: wait for the line.
    assert server.wait_handshakes(1) == [
        {
            "sent_challenge": "{sha256}+40" if peer_python.modern_handshake else "raw20",
            "received_response": peer_common.expected_handshake(
                peer_python.modern_handshake, DISTPROC_MODERN
            )["response"],
            "sent_verdict": "#FAILURE#",
            "outcome": "AuthenticationError",
        }
    ]

    manager = distproc_connect(server.port, authkey)
    assert dict_round_trip(manager) == {"ok": 1}


def test_native_clients_can_refuse_md5(
    peer_python: PeerPython, stdlib_server: StdlibServerFactory, authkey: bytes
) -> None:
    """``allow_md5=False`` on the multiplexer and on distproc.aio, as on ``Client()``:
    a 3.8-3.11 server, which authenticates with HMAC-MD5 only, is refused."""
    server = stdlib_server(peer_python)
    address = (peer_common.HOST, server.port)

    async def aio_connect() -> Any:
        return await distproc.aio.connect(address, authkey, allow_md5=False)

    if peer_python.modern_handshake:
        # {sha256}: the handshake passes; a stdlib server then has no multiplexer.
        assert get_multiplexer(address, authkey, "pickle", allow_md5=False) is None
        with pytest.raises(DistprocError, match="not a distproc server"):
            asyncio.run(aio_connect())
    else:
        with pytest.raises(AuthenticationError, match="allow_md5=False refuses"):
            get_multiplexer(address, authkey, "pickle", allow_md5=False)
        with pytest.raises(AuthenticationError, match="allow_md5=False refuses"):
            asyncio.run(aio_connect())
        with pytest.raises(AuthenticationError, match="allow_md5=False refuses"):
            Client(address, authkey, allow_md5=False)
    # The same server, with MD5 allowed: served over the stdlib's protocol.
    assert get_multiplexer(address, authkey, "pickle") is None
    assert dict_round_trip(distproc_connect(server.port, authkey)) == {"ok": 1}
