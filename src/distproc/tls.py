"""Mutual TLS between distproc peers: :class:`TLSConfig`, and how each side meets the other.

One :class:`TLSConfig` names three PEM files: this side's certificate, its
private key, and the CA that signs every peer's certificate (``distproc
certs init`` and ``distproc certs issue`` make them).  A server given one
(``ServerConfig(tls=...)``) accepts only TLS 1.3 or newer and, by default,
only clients whose certificate that CA signed; a client given one checks the
server's certificate against the CA and the host it connects to.  The
authkey handshake still runs, inside TLS: TLS says who the peer is, the
authkey what it may do.

A stdlib peer cannot speak TLS, and a plain peer and a TLS one would wait for
each other for ever (the server waits for a ClientHello, the client for a
challenge).  So a TLS server first writes one plain frame, :data:`PREAMBLE`,
which a TLS client reads before it starts TLS: a plain client reads it where
it expects the challenge and says the server needs TLS, and a TLS client that
reads a challenge instead says that the server speaks no TLS.

The contexts use :func:`ssl.create_default_context`, so Python 3.13's
stricter X.509 checks apply where that Python runs.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENV_CA", "ENV_CERT", "ENV_KEY", "PREAMBLE", "TLSConfig", "refused_message"]

#: The environment variables that the command line reads (``--tls-cert`` and so on).
ENV_CERT = "DISTPROC_TLS_CERT"
ENV_KEY = "DISTPROC_TLS_KEY"
ENV_CA = "DISTPROC_TLS_CA"

#: The plain frame's payload that a TLS server sends before TLS starts (see the module
#: docstring); a stdlib client shows it in its ``AssertionError``.
PREAMBLE = (
    b"#TLS-REQUIRED# this distproc server speaks only TLS: connect with tls= "
    b"(or --tls-cert, --tls-key and --tls-ca)"
)


@dataclass(frozen=True)
class TLSConfig:
    """The PEM files of one side of a mutual TLS connection (see the module docstring).

    ``cert`` and ``key`` are this side's certificate (chain) and private key;
    a client may leave them out only for a server that does not require
    client certificates.  ``ca`` is the CA certificate that peers' certificates
    must be signed by.  ``require_client_cert`` (server side) is mutual TLS;
    ``False`` accepts clients without a certificate, the authkey alone then
    telling who they are.  ``server_hostname`` (client side) is the name the
    server's certificate must carry, by default the host connected to.
    """

    cert: str | os.PathLike[str] | None
    key: str | os.PathLike[str] | None
    ca: str | os.PathLike[str]
    require_client_cert: bool = True
    server_hostname: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TLSConfig | None:
        """The configuration that ``DISTPROC_TLS_CERT``, ``_KEY`` and ``_CA`` name, if set."""
        env = os.environ if environ is None else environ
        cert, key, ca = (env.get(name) or None for name in (ENV_CERT, ENV_KEY, ENV_CA))
        if cert is None and key is None and ca is None:
            return None
        if ca is None:
            raise ValueError(f"{ENV_CERT}/{ENV_KEY} are set but {ENV_CA} is not: name the CA too")
        return cls(cert, key, ca)

    def env(self) -> dict[str, str]:
        """This configuration as the environment variables of :meth:`from_env`."""
        out = {ENV_CA: str(Path(self.ca).resolve())}
        if self.cert is not None:
            out[ENV_CERT] = str(Path(self.cert).resolve())
        if self.key is not None:
            out[ENV_KEY] = str(Path(self.key).resolve())
        return out

    def _load_chain(self, ctx: ssl.SSLContext) -> None:
        if self.cert is None:
            return
        try:
            ctx.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot load the TLS certificate {os.fspath(self.cert)!r} with key "
                f"{os.fspath(self.key) if self.key else None!r}: {exc}"
            ) from None

    def _context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(purpose, cafile=os.fspath(self.ca))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the TLS CA {os.fspath(self.ca)!r}: {exc}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self._load_chain(ctx)
        return ctx

    def server_context(self) -> ssl.SSLContext:
        """The server's context: TLS 1.3+, its certificate, client certificates checked."""
        if self.cert is None or self.key is None:
            raise ValueError("a TLS server needs its certificate and key (cert= and key=)")
        ctx = self._context(ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """The client's context: TLS 1.3+, the server's certificate and name checked."""
        return self._context(ssl.Purpose.SERVER_AUTH)


def refused_message(exc: BaseException) -> str:
    """What a failed TLS handshake means, for a person: which certificate to fix."""
    reason = getattr(exc, "reason", None) or str(exc)
    text = str(reason).lower().replace("_", " ")
    if "certificate required" in text:
        what = (
            "the server requires a client certificate: give cert= and key= "
            "(--tls-cert, --tls-key)"
        )
    elif "unknown ca" in text:
        what = "the server does not know the CA of this client's certificate"
    elif "certificate expired" in text and "alert" in text:
        what = "the server refused this client's certificate: it has expired"
    elif "bad certificate" in text or "certificate unknown" in text:
        what = "the server refused this client's certificate"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        detail = getattr(exc, "verify_message", "") or str(exc)
        what = f"the server's certificate failed verification: {detail}"
    else:
        what = f"TLS failed: {exc}"
    return f"{what} ({reason})" if str(reason) not in what else what
