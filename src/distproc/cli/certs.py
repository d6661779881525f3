"""``distproc certs``: a private CA and the certificates it signs (see :mod:`distproc.certs`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from .errors import CliError, CliUsageError

if TYPE_CHECKING:
    from ..certs import Issued

__all__ = ["certs"]


@click.group(
    epilog="""\b
Examples:
  $ distproc certs init ~/.config/distproc/tls
  $ distproc certs issue server --host 192.168.0.9 --host node9 --dir ~/.config/distproc/tls
  $ distproc certs issue worker1 --dir ~/.config/distproc/tls
  $ distproc serve --address 0.0.0.0:5000 --tls-cert server.pem --tls-key server.key \\
        --tls-ca ca.pem
""",
)
def certs() -> None:
    """Make certificates for mutual TLS between distproc peers.

    `init DIR` makes a private CA (DIR/ca.pem, DIR/ca.key); `issue NAME`
    signs DIR/NAME.pem and DIR/NAME.key with it. A certificate serves both
    roles: a server's name list (--host) is what clients may reach it by.
    Give every machine its own certificate and the CA's ca.pem; keep ca.key
    where only you can read it.
    """


@certs.command("init")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False))
def init(directory: str) -> int:
    """Make a private CA in DIR (created if missing): ca.pem and ca.key."""
    from ..certs import init_ca

    issued = _made(lambda: init_ca(directory))
    click.echo(f"distproc: CA certificate {issued.cert}, its key {issued.key} (keep it private)")
    return 0


@certs.command("issue")
@click.argument("name")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="HOST",
    help="A DNS name or IP address the certificate is good for (repeatable) "
    "[default: localhost, 127.0.0.1, ::1].",
)
@click.option(
    "--dir",
    "directory",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the CA is (from `distproc certs init`), and where NAME.pem and NAME.key go.",
)
@click.option(
    "--days", type=click.IntRange(min=1), default=825, show_default=True, help="Days it is valid."
)
def issue(name: str, hosts: tuple[str, ...], directory: str, days: int) -> int:
    """Sign a certificate NAME.pem (and its key NAME.key) with the CA in --dir."""
    from ..certs import issue as issue_cert

    issued = _made(lambda: issue_cert(name, directory, hosts=hosts, days=days))
    click.echo(f"distproc: certificate {issued.cert}, its key {issued.key}")
    return 0


def _made(make: Callable[[], Issued]) -> Issued:
    """What ``make`` wrote; its errors as one line."""
    try:
        return make()
    except ValueError as exc:
        raise CliUsageError(str(exc)) from None
    except (ImportError, OSError) as exc:
        raise CliError(str(exc)) from None
