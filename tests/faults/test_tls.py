"""Mutual TLS between real processes: ``distproc serve --tls-*``, workers, an Executor.

Certificates come from the ``distproc certs`` command, as a user makes them.
Each refused client (no certificate, one of another CA, an expired one, no
TLS at all, TLS to a plain server) gets one clear line, and the server goes
on serving: a good client is served right after.  A relay between client and
server keeps every byte that passes, so the tests can tell that a payload
never crosses in the clear with TLS, and that the same check sees it without.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import pytest

import distproc
from distproc.certs import issue

from ._procs import TASKFNS, Proc, clean_environ, free_port

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

KEY = "tls-test-key"
#: A string that no TLS record would show in the clear.
PAYLOAD = "distinctive-payload-4f1c9e-in-the-clear"


@dataclass(frozen=True)
class Certs:
    dir: Path

    def tls(self, name: str, ca: Path | None = None) -> distproc.TLSConfig:
        return distproc.TLSConfig(
            str(self.dir / f"{name}.pem"), str(self.dir / f"{name}.key"), str(ca or self.ca)
        )

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    def options(self, name: str) -> list[str]:
        tls = self.tls(name)
        assert tls.cert is not None and tls.key is not None
        return ["--tls-cert", tls.cert, "--tls-key", tls.key, "--tls-ca", tls.ca]


def _certs_command(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "distproc", "certs", *args], check=True,
                   capture_output=True, timeout=60)  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA with a server and a client certificate, and an expired one, made by `distproc certs`."""
    where = tmp_path_factory.mktemp("tls")
    _certs_command("init", str(where))
    _certs_command("issue", "server", "--dir", str(where))
    _certs_command("issue", "client", "--dir", str(where), "--host", "client.invalid")
    ten_days_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=10)
    issue("expired", where, days=1, not_before=ten_days_ago)
    return Certs(where)


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Another CA, and a client certificate that it signed."""
    where = tmp_path_factory.mktemp("other-ca")
    _certs_command("init", str(where))
    _certs_command("issue", "client", "--dir", str(where))
    return Certs(where)


def _env(**changes: str) -> dict[str, str]:
    env = clean_environ(DISTPROC_AUTHKEY=KEY, **changes)
    env["PYTHONPATH"] = os.pathsep.join([str(TASKFNS), *sys.path])
    for name in distproc.TLSConfig.ENV_NAMES:
        if name not in changes:
            env.pop(name, None)
    return env


def _tls_env(certs: Certs, name: str) -> dict[str, str]:
    return _env(**certs.tls(name).environ())


def _serve(procs: Callable[..., Proc], *options: str, **env: str) -> int:
    port = free_port()
    server = procs("serve", "--address", f"127.0.0.1:{port}", *options, env=_env(**env))
    server.wait_ready()
    return port


def _refused(procs: Callable[..., Proc], port: int, env: dict[str, str]) -> str:
    """A `distproc worker --threads` that must exit 2 with one line: that line."""
    worker = procs("worker", f"127.0.0.1:{port}", "--threads", "-c", "1", env=env)
    assert worker.finish(timeout=60) == 2, worker.text
    assert len(worker.lines) == 1, worker.text
    return worker.lines[0].rstrip("\n")


def _executor_squares(port: int, tls: distproc.TLSConfig | None) -> list[int]:
    import dp_taskfns

    with distproc.Executor(connect=("127.0.0.1", port), authkey=KEY, tls=tls) as ex:
        return list(ex.map(dp_taskfns.square, range(5)))


# -------------------------------------------------------------------- relay
class Relay:
    """A loopback TCP proxy to ``target`` that keeps every byte it passes, both ways."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.captured = bytearray()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    self.captured += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            sock.close()
        for thread in self._threads:
            thread.join(10)


@pytest.fixture
def relay() -> Iterator[Callable[[int], Relay]]:
    made: list[Relay] = []

    def make(port: int) -> Relay:
        made.append(Relay(("127.0.0.1", port)))
        return made[-1]

    yield make
    for one in made:
        one.close()


#: Both relay tests keep every connection on TCP: no move to a same-host socket
#: past the relay (a TLS server offers none anyway), so TLS is their one difference.
NO_MOVE = {"DISTPROC_LOCAL_SOCKET": "0"}


def _echo_through(relay: Relay, tls: distproc.TLSConfig | None) -> bytes:
    import dp_taskfns

    with distproc.Executor(connect=("127.0.0.1", relay.port), authkey=KEY, tls=tls) as ex:
        future: Future[str] = ex.submit(dp_taskfns.echo, PAYLOAD)
        assert future.result(timeout=60) == PAYLOAD
    with relay._lock:
        return bytes(relay.captured)


# -------------------------------------------------------------------- tests
def test_mutual_tls_between_serve_a_worker_and_an_executor(
    procs: Callable[..., Proc],
    certs: Certs,
    relay: Callable[[int], Relay],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISTPROC_LOCAL_SOCKET", "0")
    port = _serve(procs, *certs.options("server"), **NO_MOVE)
    # The worker takes its TLS files from DISTPROC_TLS_*, the Executor from tls=.
    worker = procs("worker", f"127.0.0.1:{port}", "-c", "1", env=_tls_env(certs, "client"))
    worker.wait_ready()
    assert _executor_squares(port, certs.tls("client")) == [0, 1, 4, 9, 16]
    captured = _echo_through(relay(port), certs.tls("client"))
    assert len(captured) > len(PAYLOAD)  # the relay did see the conversation
    assert PAYLOAD.encode() not in captured
    assert b"#CHALLENGE#" not in captured  # the authkey handshake runs inside TLS


def test_without_tls_the_relay_sees_the_payload(
    procs: Callable[..., Proc], relay: Callable[[int], Relay], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check of the test above can fail: without TLS the payload crosses in the clear."""
    monkeypatch.setenv("DISTPROC_LOCAL_SOCKET", "0")
    port = _serve(procs, **NO_MOVE)
    procs("worker", f"127.0.0.1:{port}", "-c", "1", env=_env()).wait_ready()
    captured = _echo_through(relay(port), None)
    assert PAYLOAD.encode() in captured
    assert b"#CHALLENGE#" in captured


def test_clients_without_a_good_certificate_are_refused_and_others_served(
    procs: Callable[..., Proc], certs: Certs, other_ca: Certs
) -> None:
    server_port = free_port()
    server = procs(
        "serve", "--address", f"127.0.0.1:{server_port}", *certs.options("server"), env=_env()
    )
    server.wait_ready()
    no_cert = _refused(procs, server_port, _env(DISTPROC_TLS_CA=str(certs.ca)))
    where = f"the server at 127.0.0.1:{server_port}"
    assert no_cert == (
        f"distproc: error: {where} closed the TLS connection before its challenge: it "
        "requires a client certificate; give --tls-cert and --tls-key (or cert=, key=)"
    )
    # A certificate of another CA (which also trusts only its own CA: it refuses ours).
    foreign = _refused(procs, server_port, _env(**other_ca.tls("client", ca=certs.ca).environ()))
    assert foreign.startswith(
        f"distproc: error: {where} closed the TLS connection before its challenge: "
        f"it refused this client's certificate '{other_ca.dir / 'client.pem'}'"
    ), foreign
    expired = _refused(procs, server_port, _tls_env(certs, "expired"))
    assert f"it refused this client's certificate '{certs.dir / 'expired.pem'}'" in expired
    # The server said exactly why, once for each, and serves a good client right after.
    server.wait_line("gave no TLS certificate, and one is required: refused")
    server.wait_line("was refused: unable to get local issuer certificate: refused")
    server.wait_line("was refused: certificate has expired: refused")
    assert server.count("refused$") == 3, server.text
    assert _executor_squares_with_worker(procs, server_port, certs) == [0, 1, 4, 9, 16]


def test_a_server_certificate_of_another_ca_is_refused(
    procs: Callable[..., Proc], certs: Certs, other_ca: Certs
) -> None:
    port = _serve(procs, *certs.options("server"))
    line = _refused(procs, port, _env(**certs.tls("client", ca=other_ca.ca).environ()))
    assert line.startswith(
        f"distproc: error: the TLS certificate of the server at 127.0.0.1:{port} was refused"
    )
    # OpenSSL's words: the server sends its CA along, which this client does not trust.
    assert line.endswith(("self-signed certificate in certificate chain",
                          "unable to get local issuer certificate")), line  # fmt: skip


def test_a_plain_client_of_a_tls_server_is_told_tls_is_required(
    procs: Callable[..., Proc], certs: Certs
) -> None:
    port = free_port()
    server = procs("serve", "--address", f"127.0.0.1:{port}", *certs.options("server"), env=_env())
    server.wait_ready()
    line = _refused(procs, port, _env())
    assert line == (
        f"distproc: error: 127.0.0.1:{port}: this distproc server requires TLS; connect with "
        "a distproc client given --tls-cert, --tls-key and --tls-ca (or "
        "tls=distproc.TLSConfig(...)); a multiprocessing.managers client cannot speak TLS"
    )
    # A stdlib client shows the same words in its handshake error.
    script = (
        "from multiprocessing.managers import BaseManager\n"
        f"m = BaseManager(address=('127.0.0.1', {port}), authkey={KEY.encode()!r})\n"
        "try:\n    m.connect()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout  # fmt: skip
    assert "this distproc server requires TLS" in out and "cannot speak TLS" in out, out
    server.wait_line("does not speak TLS")
    assert _executor_squares_with_worker(procs, port, certs) == [0, 1, 4, 9, 16]


def _executor_squares_with_worker(procs: Callable[..., Proc], port: int, certs: Certs) -> list[int]:
    procs("worker", f"127.0.0.1:{port}", "-c", "1", env=_tls_env(certs, "client")).wait_ready()
    return _executor_squares(port, certs.tls("client"))


def test_a_tls_client_of_a_plain_server_is_told_it_has_no_tls(
    procs: Callable[..., Proc], certs: Certs
) -> None:
    port = free_port()
    server = procs("serve", "--address", f"127.0.0.1:{port}", env=_env())
    server.wait_ready()
    line = _refused(procs, port, _tls_env(certs, "client"))
    assert line.startswith(
        f"distproc: error: the server at 127.0.0.1:{port} does not speak TLS"
    ), line
    server.wait_line("it speaks TLS, and this server has none")
    procs("worker", f"127.0.0.1:{port}", "-c", "1", env=_env()).wait_ready()
    assert _executor_squares(port, None) == [0, 1, 4, 9, 16]


def _python(version: str) -> Path | None:
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = sorted(Path(root.stdout.strip(), "versions").glob(f"{version}.*/bin/python3"))
    return found[-1] if found else None


def test_the_certificates_pass_python_3_13_default_checks(
    procs: Callable[..., Proc], certs: Certs
) -> None:
    """Python 3.13's default context checks certificates strictly (VERIFY_X509_STRICT)."""
    python = _python("3.13")
    if python is None:
        pytest.skip("no CPython 3.13 under pyenv")
    port = _serve(procs, *certs.options("server"))
    tls = certs.tls("client")
    script = (
        "import ssl, socket, sys\n"
        f"ctx = ssl.create_default_context(cafile={tls.ca!r})\n"
        "assert ctx.verify_flags & ssl.VERIFY_X509_STRICT\n"
        f"ctx.load_cert_chain({tls.cert!r}, {tls.key!r})\n"
        f"raw = socket.create_connection(('127.0.0.1', {port}), timeout=30)\n"
        "with ctx.wrap_socket(raw, server_hostname='127.0.0.1') as s:\n"
        "    head = s.recv(4)\n"
        "    print(s.version(), s.recv(int.from_bytes(head, 'big'))[:11].decode())\n"
    )
    out = subprocess.run([str(python), "-c", script], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.stdout.split() == ["TLSv1.3", "#CHALLENGE#"], out.stderr
