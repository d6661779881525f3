"""Clients that reach a port where no manager server listens: they say so, they never hang.

A port that accepts and says nothing (a stuck process, a plain listener, an
HTTP server waiting for a request) ends the client's handshake timeout; a
port that answers with something else (an HTTP server's ``408``) is refused
at its first bytes.  Either way the client raises
:class:`~distproc.errors.NotAServerError`, whose message starts with what
is wrong.  Each case runs the real client: ``BaseManager.connect()``,
:mod:`distproc.aio` and ``distproc status``.
"""

from __future__ import annotations

import asyncio
import inspect
import queue

import pytest
from click.testing import CliRunner, Result
from shared_fixtures import AUTHKEY, Address

import distproc.aio
from distproc.cli.main import cli
from distproc.client.connect import ENV
from distproc.errors import ConnectionLostError, NotAServerError, ProtocolError
from distproc.managers import BaseManager

NOT_A_SERVER = "not a distproc or multiprocessing.managers server"
#: What an HTTP server's first four bytes, b"HTTP", declare as a frame length.
HTTP_AS_LENGTH = "bad message length: 1213486160 bytes declared, limit 256"


class QM(BaseManager):
    pass


QM.register("Queue", queue.Queue)


#: The clients' handshake timeout against a silent port.
TIMEOUT = "0.3"
#: ... and against the HTTP server, which answers after 0.2 s: ample, so that it answers first.
HTTP_TIMEOUT = "10"


@pytest.fixture(autouse=True)
def _short_handshake_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, TIMEOUT)


def where(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


# --------------------------------------------------------- BaseManager.connect()
def test_connect_to_a_silent_port_times_out(silent_listener: Address) -> None:
    manager = QM(address=silent_listener, authkey=AUTHKEY)
    with pytest.raises(NotAServerError) as caught:
        manager.connect()
    assert str(caught.value) == (
        f"{NOT_A_SERVER} at {where(silent_listener)}: no handshake within {TIMEOUT}s "
        "(or a server that is stuck)"
    )
    assert isinstance(caught.value, ProtocolError)


def test_connect_to_an_http_server_says_what_it_is_not(
    http_408_server: Address, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, HTTP_TIMEOUT)
    manager = QM(address=http_408_server, authkey=AUTHKEY)
    with pytest.raises(NotAServerError) as caught:
        manager.connect()
    assert str(caught.value) == f"{NOT_A_SERVER} at {where(http_408_server)}: {HTTP_AS_LENGTH}"


def test_connect_to_a_port_that_closes_at_once(closing_listener: Address) -> None:
    manager = QM(address=closing_listener, authkey=AUTHKEY)
    with pytest.raises(ConnectionLostError, match="closed the connection during the handshake"):
        manager.connect()


def test_an_explicit_timeout_wins(
    silent_listener: Address, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "60")

    async def main() -> None:
        await distproc.aio.connect(silent_listener, AUTHKEY, QM, handshake_timeout=0.2)

    with pytest.raises(NotAServerError, match=r"no handshake within 0\.2s"):
        asyncio.run(main())


# ------------------------------------------------------------------ distproc.aio
def test_aio_connect_to_a_silent_port_times_out(silent_listener: Address) -> None:
    async def main() -> None:
        await distproc.aio.connect(silent_listener, AUTHKEY, QM)

    with pytest.raises(NotAServerError) as caught:
        asyncio.run(main())
    assert str(caught.value).startswith(f"{NOT_A_SERVER} at {where(silent_listener)}: ")
    assert f"no handshake within {TIMEOUT}s" in str(caught.value)


def test_aio_connect_to_an_http_server_says_what_it_is_not(
    http_408_server: Address, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, HTTP_TIMEOUT)

    async def main() -> None:
        await distproc.aio.connect(http_408_server, AUTHKEY, QM)

    with pytest.raises(NotAServerError) as caught:
        asyncio.run(main())
    assert str(caught.value) == f"{NOT_A_SERVER} at {where(http_408_server)}: {HTTP_AS_LENGTH}"


# --------------------------------------------------------------- distproc status
@pytest.fixture
def runner() -> CliRunner:
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg,unused-ignore]  # click < 8.2
    return CliRunner()


def status(runner: CliRunner, address: Address, timeout: str = TIMEOUT) -> Result:
    return runner.invoke(
        cli, ["status", where(address)], env={"DISTPROC_AUTHKEY": AUTHKEY.decode(), ENV: timeout}
    )


def error_line(result: Result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("distproc: error: ")
    return lines[0][len("distproc: error: ") :]


def test_status_of_a_silent_port(runner: CliRunner, silent_listener: Address) -> None:
    line = error_line(status(runner, silent_listener))
    expected = f"{NOT_A_SERVER} at {where(silent_listener)}: no handshake within {TIMEOUT}s"
    assert line.startswith(expected)


def test_status_of_an_http_server(runner: CliRunner, http_408_server: Address) -> None:
    line = error_line(status(runner, http_408_server, HTTP_TIMEOUT))
    assert line == f"{NOT_A_SERVER} at {where(http_408_server)}: {HTTP_AS_LENGTH}"


def test_status_of_a_port_that_closes_at_once(runner: CliRunner, closing_listener: Address) -> None:
    line = error_line(status(runner, closing_listener))
    assert "()" not in line
    assert line == (
        f"lost the connection to {where(closing_listener)} (the server closed the connection "
        "during the handshake); is it a distproc or multiprocessing.managers server?"
    )
