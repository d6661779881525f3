"""TLSConfig and the TLS options in one process: contexts, the CLI's checks, no same-host socket."""

from __future__ import annotations

import queue
import ssl
from pathlib import Path
from typing import Any

import pytest
from shared_fixtures import AUTHKEY, serve_in_thread

import distproc
from distproc.certs import init_ca, issue
from distproc.cli.errors import CliUsageError
from distproc.cli.options import tls_config
from distproc.managers import BaseManager
from distproc.server import Server, ServerConfig


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("tls")
    init_ca(where)
    issue("node", where)
    return where


def _config(where: Path) -> distproc.TLSConfig:
    return distproc.TLSConfig(
        str(where / "node.pem"), str(where / "node.key"), str(where / "ca.pem")
    )


def test_contexts_are_tls_1_3_mutual_and_strict(tls_dir: Path) -> None:
    config = _config(tls_dir)
    server, client = config.server_context(), config.client_context()
    for ctx in (server, client):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_flags & ssl.VERIFY_X509_STRICT
    assert server.verify_mode == ssl.CERT_REQUIRED
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname


def test_the_cli_wants_the_ca_and_a_cert_with_its_key(tls_dir: Path) -> None:
    assert tls_config(None, None, None) is None
    with pytest.raises(CliUsageError, match="--tls-cert with --tls-key"):
        tls_config(str(tls_dir / "node.pem"), None, str(tls_dir / "ca.pem"))
    with pytest.raises(CliUsageError, match="needs --tls-ca"):
        tls_config(str(tls_dir / "node.pem"), str(tls_dir / "node.key"), None)
    with pytest.raises(CliUsageError, match="cannot load the TLS files"):
        tls_config(str(tls_dir / "missing.pem"), str(tls_dir / "node.key"), str(tls_dir / "ca.pem"))
    only_ca = tls_config(None, None, str(tls_dir / "ca.pem"))
    assert only_ca is not None and only_ca.cert is None


def test_environment_round_trip(tls_dir: Path) -> None:
    config = _config(tls_dir)
    assert distproc.TLSConfig.from_env(config.environ()) == config
    assert distproc.TLSConfig.from_env({}) is None
    with pytest.raises(ValueError, match="DISTPROC_TLS_CA"):
        distproc.TLSConfig.from_env({"DISTPROC_TLS_CERT": "x", "DISTPROC_TLS_KEY": "y"})


class _QueueManager(BaseManager):
    pass


def test_a_tls_server_offers_no_same_host_socket(tls_dir: Path) -> None:
    """A Unix socket would let a local process in without a certificate."""
    shared: queue.Queue[Any] = queue.Queue()
    registry = {"q": (lambda: shared, None, None, None)}
    plain = serve_in_thread(Server(registry, ("127.0.0.1", 0), AUTHKEY, "pickle"))
    secure = serve_in_thread(
        Server(registry, ("127.0.0.1", 0), AUTHKEY, "pickle",
               config=ServerConfig(tls=_config(tls_dir)))
    )  # fmt: skip
    try:
        if plain.server.local_address is None:
            pytest.skip("no same-host sockets here (not Linux, or DISTPROC_LOCAL_SOCKET=0)")
        assert secure.server.local_address is None
        _QueueManager.register("q")
        manager = _QueueManager(address=secure.address, authkey=AUTHKEY, tls=_config(tls_dir))
        manager.connect()
        proxy = manager.q()  # type: ignore[attr-defined]
        proxy.put("over TLS")
        assert shared.get(timeout=10) == "over TLS"
        del proxy
        manager.close_connections()
    finally:
        plain.stop()
        secure.stop()
