"""A private CA and the certificates it signs, for mutual TLS between distproc peers.

:func:`init_ca` writes ``ca.pem`` and ``ca.key`` into a directory;
:func:`issue` writes ``NAME.pem`` and ``NAME.key`` there, signed by that CA.
A certificate is good for both roles (``serverAuth`` and ``clientAuth``), so
one file pair lets a machine serve and connect; its subject alternative names
are the hosts a client may reach it by (``localhost``, ``127.0.0.1`` and
``::1`` unless told otherwise).

Keys are ECDSA P-256, written with mode 0600.  Every certificate carries what
the stricter checks of Python 3.13's default context (``VERIFY_X509_STRICT``)
require: basic constraints and key usage marked critical, a subject key
identifier, and, on the certificates the CA signs, its authority key identifier.

This module needs the ``cryptography`` library: ``pip install 'distproc[tls]'``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.x509 import Certificate

__all__ = ["DEFAULT_HOSTS", "Issued", "init_ca", "issue"]

#: The names a certificate is good for when no host is given.
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_CERT, CA_KEY = "ca.pem", "ca.key"
#: Days a certificate is valid for, unless told otherwise.
CA_DAYS, CERT_DAYS = 3650, 825


@dataclass(frozen=True)
class Issued:
    """Where a certificate and its key were written."""

    cert: Path
    key: Path


def _crypto() -> Any:
    try:
        from cryptography import x509
    except ImportError:
        raise ImportError(
            "making certificates needs the cryptography library: pip install 'distproc[tls]'"
        ) from None
    return x509


def _write(path: Path, data: bytes, *, private: bool) -> None:
    if path.exists():
        raise FileExistsError(f"{path} exists already; remove it first to make a new one")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _new_key() -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> Any:
    x509 = _crypto()
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _window(days: int, not_before: datetime.datetime | None) -> tuple[Any, Any]:
    start = not_before or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        minutes=5  # a peer whose clock is a little behind still accepts it
    )
    return start, start + datetime.timedelta(days=days)


def _key_usage(*allowed: str) -> Any:
    """A KeyUsage extension that allows only ``allowed`` (its argument names)."""
    x509 = _crypto()
    names = ("digital_signature", "content_commitment", "key_encipherment",
             "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
             "encipher_only", "decipher_only")  # fmt: skip
    return x509.KeyUsage(**{name: name in allowed for name in names})


def init_ca(
    directory: str | os.PathLike[str], *, name: str | None = None, days: int = CA_DAYS
) -> Issued:
    """Make a private CA in ``directory`` (created if missing): ``ca.pem`` and ``ca.key``.

    Its name is ``distproc CA`` and a random part, unless ``name`` is given: two
    CAs of one name would confuse a peer's search for a certificate's issuer.
    """
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes

    where = Path(directory)
    where.mkdir(parents=True, exist_ok=True)
    key = _new_key()
    subject = _name(name or f"distproc CA {secrets.token_hex(4)}")
    start, end = _window(days, None)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage("key_cert_sign", "crl_sign"), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    issued = Issued(where / CA_CERT, where / CA_KEY)
    _write(issued.key, _key_pem(key), private=True)
    _write(issued.cert, _cert_pem(cert), private=False)
    return issued


def _san(hosts: tuple[str, ...] | list[str]) -> Any:
    x509 = _crypto()
    names: list[Any] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue(
    name: str,
    directory: str | os.PathLike[str],
    *,
    hosts: tuple[str, ...] | list[str] = (),
    days: int = CERT_DAYS,
    not_before: datetime.datetime | None = None,
) -> Issued:
    """Sign a certificate for ``name`` with the CA in ``directory``: ``NAME.pem``, ``NAME.key``.

    ``hosts`` are the DNS names and IP addresses it is good for
    (:data:`DEFAULT_HOSTS` when empty); ``not_before`` backdates it (tests
    make expired certificates so).
    """
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if not name or "/" in name or name.startswith(".") or name == "ca":
        raise ValueError(f"bad certificate name {name!r}: a plain file name other than 'ca'")
    where = Path(directory)
    try:
        ca_cert = x509.load_pem_x509_certificate((where / CA_CERT).read_bytes())
        ca_key = serialization.load_pem_private_key((where / CA_KEY).read_bytes(), None)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no CA in {where}: make one first with `distproc certs init {where}`"
        ) from None
    key = _new_key()
    start, end = _window(days, not_before)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage("digital_signature"), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(_san(list(hosts) or list(DEFAULT_HOSTS)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    issued = Issued(where / f"{name}.pem", where / f"{name}.key")
    _write(issued.key, _key_pem(key), private=True)
    _write(issued.cert, _cert_pem(cert), private=False)
    return issued
