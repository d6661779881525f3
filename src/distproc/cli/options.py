"""Options that several ``distproc`` commands share: HOST:PORT, the authkey and TLS.

The authkey never comes from argv, where ``ps`` shows it to every user of the
machine: it comes from ``DISTPROC_AUTHKEY`` or ``--authkey-file`` and is used as
the UTF-8 bytes of that text.

TLS: ``--tls-cert``, ``--tls-key`` and ``--tls-ca`` (or ``DISTPROC_TLS_CERT``,
``_KEY`` and ``_CA``) become one ``tls`` argument of the command: a
:class:`~distproc.tls.TLSConfig` or ``None``.  ``--tls-ca`` alone is a
client without a certificate (for a server that does not require one).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .errors import CliUsageError

if TYPE_CHECKING:
    from ..tls import TLSConfig

__all__ = [
    "AUTHKEY_ENV",
    "DEFAULT_ADDRESS",
    "authkey_options",
    "parse_address",
    "read_authkey",
    "tls_config",
    "tls_options",
]

AUTHKEY_ENV = "DISTPROC_AUTHKEY"
DEFAULT_ADDRESS = "127.0.0.1:50000"
_ADDRESS_HINT = "expected HOST:PORT, e.g. 127.0.0.1:50000 or [::1]:50000"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` as a ``(host, port)`` tuple; port 0 is allowed."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise CliUsageError(f"bad address {text!r}: {_ADDRESS_HINT}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise CliUsageError(f"bad address {text!r}: {host!r} is not an IPv6 address") from None
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise CliUsageError(f"bad address {text!r}: {_ADDRESS_HINT}")
        if ":" in host:
            raise CliUsageError(
                f"bad address {text!r}: write an IPv6 host in brackets, e.g. [::1]:50000"
            )
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise CliUsageError(f"bad address {text!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


def read_authkey(authkey_file: str | None, environ: Mapping[str, str]) -> str | None:
    """The authkey text from ``--authkey-file`` (preferred) or the environment, if any."""
    if authkey_file is not None:
        source = f"authkey file {authkey_file!r}"
        try:
            key = Path(authkey_file).read_text(encoding="utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise CliUsageError(f"{source} is not UTF-8 text") from None
        except OSError as exc:
            raise CliUsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    else:
        source = AUTHKEY_ENV
        found = environ.get(AUTHKEY_ENV)
        if found is None:
            return None
        key = found
    if not key:
        raise CliUsageError(f"{source} is empty")
    return key


def _refuse_authkey_in_argv(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None:
        raise CliUsageError(
            "--authkey is not accepted: other users can read the command line; "
            f"set {AUTHKEY_ENV} or use --authkey-file FILE"
        )


_F = TypeVar("_F", bound=Callable[..., Any])
#: TLSConfig.ENV_NAMES, written out: the worker's start does not import ssl without TLS.
ENV_CERT, ENV_KEY, ENV_CA = "DISTPROC_TLS_CERT", "DISTPROC_TLS_KEY", "DISTPROC_TLS_CA"


def authkey_options(command: _F) -> _F:
    """``--authkey-file FILE``, and ``--authkey``, refused: a key on argv is public."""
    command = click.option(
        "--authkey", hidden=True, expose_value=False, callback=_refuse_authkey_in_argv
    )(command)
    return click.option(
        "--authkey-file",
        metavar="FILE",
        help=f"Read the authkey from FILE (one line of text) instead of ${AUTHKEY_ENV}.",
    )(command)


def tls_config(cert: str | None, key: str | None, ca: str | None) -> TLSConfig | None:
    """The TLS config of ``--tls-cert``, ``--tls-key`` and ``--tls-ca`` (see the module)."""
    if cert is None and key is None and ca is None:
        return None
    if ca is None or (cert is None) != (key is None):
        raise CliUsageError(
            f"TLS needs --tls-ca, and --tls-cert with --tls-key (both or neither; "
            f"or {ENV_CERT}, {ENV_KEY}, {ENV_CA})"
        )
    from ..tls import TLSConfig

    config = TLSConfig(cert, key, ca)
    try:
        config.client_context()  # unreadable files: one line now, not at the first connect
    except OSError as exc:
        raise CliUsageError(str(exc)) from None
    return config


_TLS_OPTIONS = (
    ("--tls-cert", ENV_CERT, "This side's certificate (PEM), e.g. from `distproc certs issue`."),
    ("--tls-key", ENV_KEY, "The private key of --tls-cert (PEM)."),
    ("--tls-ca", ENV_CA, "The CA (PEM) that the other side's certificate must be signed by."),
)


def tls_options(command: _F) -> _F:
    """``--tls-cert``, ``--tls-key``, ``--tls-ca`` (see the module docstring): the command
    is given ``tls``, a :class:`~distproc.tls.TLSConfig` or ``None``."""

    @functools.wraps(command)
    def with_tls(
        *args: Any, tls_cert: str | None, tls_key: str | None, tls_ca: str | None, **kwargs: Any
    ) -> Any:
        return command(*args, tls=tls_config(tls_cert, tls_key, tls_ca), **kwargs)

    wrapped: Any = with_tls
    for flag, env, text in reversed(_TLS_OPTIONS):
        wrapped = click.option(
            flag,
            envvar=env,
            metavar="FILE",
            type=click.Path(dir_okay=False),
            help=f"{text} [env: {env}]",
        )(wrapped)
    return wrapped  # type: ignore[no-any-return]  # click.option returns its argument
