"""TLS under the handshake: :class:`TLSConfig` and what each side says when the other has none.

distproc peers may wrap their connections in TLS (1.3 at least).  A
:class:`TLSConfig` names three PEM files: this side's certificate and key, and
the CA that the other side's certificate must be signed by.  By default the
server requires a client certificate (mutual TLS) and the client checks the
server's certificate against the name it connected to.  The authkey handshake
(:mod:`.handshake`) still runs, inside TLS: TLS says which machines may talk,
the authkey which programs.

A stdlib peer cannot speak TLS, and a plain distproc peer may meet a TLS one:

* **A plain client reaching a TLS server.**  A TLS client speaks first (its
  ``ClientHello``, a record starting with
  :data:`~distproc.wire.handshake.TLS_HANDSHAKE_RECORD`), a plain
  one waits for the server's challenge.  A TLS server that hears nothing for
  :attr:`TLSConfig.plain_wait` seconds, or hears something else first, sends
  the one frame :data:`~distproc.wire.handshake.TLS_REQUIRED` in the clear,
  where a challenge would be, and closes.  A stdlib client shows it in its
  "expected challenge" error; a distproc client raises it as
  :class:`~distproc.errors.TLSError` (raised by the layers that connect: this
  module is ground, below them).
* **A TLS client reaching a plain server.**  The plain server sees a first
  byte of ``TLS_HANDSHAKE_RECORD`` where a frame's length should be, logs one
  line and closes; the client's TLS handshake fails on the challenge it got
  instead of a ``ServerHello``, and :func:`explain` says what that means.

Certificates for a private CA: ``distproc certs`` (:mod:`distproc.certs`).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "ENV_CA",
    "ENV_CERT",
    "ENV_KEY",
    "TLSConfig",
    "TLSSocket",
    "explain",
    "refused_after_handshake",
]

ENV_CERT = "DISTPROC_TLS_CERT"
ENV_KEY = "DISTPROC_TLS_KEY"
ENV_CA = "DISTPROC_TLS_CA"

#: OpenSSL's reasons for a handshake that met no TLS at all (the peer sent something else).
_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
     "UNEXPECTED_RECORD", "HTTP_REQUEST", "UNKNOWN_PROTOCOL"}
)  # fmt: skip


@dataclass(frozen=True)
class TLSConfig:
    """Mutual TLS for a distproc server or client: three PEM files (see the module docstring).

    One config serves both roles when its certificate allows both (``distproc
    certs issue`` makes such certificates).  A client without ``cert`` and
    ``key`` offers no certificate: only servers with ``require_client_cert=False``
    accept it.  ``require_client_cert=False``
    lets a server accept clients without a certificate (TLS only encrypts and
    authenticates the server then).  ``server_hostname`` is the name the
    client checks in the server's certificate (default: the host it connects to).
    """

    #: The environment variables of :meth:`from_env`: cert, key, CA.
    ENV_NAMES: ClassVar[tuple[str, str, str]] = (ENV_CERT, ENV_KEY, ENV_CA)

    cert: str | None
    key: str | None
    ca: str
    require_client_cert: bool = True
    server_hostname: str | None = None
    #: Seconds a TLS server waits for a ``ClientHello`` before it takes the peer
    #: for a plain one and tells it so (a TLS client sends it at once).
    plain_wait: float = 2.0
    _contexts: dict[bool, ssl.SSLContext] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TLSConfig | None:
        """The config that ``DISTPROC_TLS_CERT``, ``_KEY`` and ``_CA`` name, if set."""
        paths = [environ.get(name) or None for name in (ENV_CERT, ENV_KEY, ENV_CA)]
        if not any(paths):
            return None
        cert, key, ca = paths
        if ca is None or (cert is None) != (key is None):
            raise ValueError(
                f"TLS needs {ENV_CA}, and {ENV_CERT} with {ENV_KEY} (both or neither)"
            )
        return cls(cert, key, ca)

    def environ(self) -> dict[str, str]:
        """The environment variables that give a child process this config (:meth:`from_env`)."""
        paths = {ENV_CERT: self.cert, ENV_KEY: self.key, ENV_CA: self.ca}
        return {name: path for name, path in paths.items() if path is not None}

    def server_context(self) -> ssl.SSLContext:
        """The context a server accepts with (made once per config)."""
        return self._context(server=True)

    def client_context(self) -> ssl.SSLContext:
        """The context a client connects with (made once per config)."""
        return self._context(server=False)

    def _context(self, *, server: bool) -> ssl.SSLContext:
        found = self._contexts.get(server)
        if found is not None:
            return found
        purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
        if server and self.cert is None:
            raise ValueError("a TLS server needs a certificate and its key (cert=, key=)")
        try:
            ctx = ssl.create_default_context(purpose, cafile=self.ca)
            if self.cert is not None:
                ctx.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise OSError(
                f"cannot load the TLS files (cert {self.cert!r}, key {self.key!r}, "
                f"CA {self.ca!r}): {exc}"
            ) from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        # Python 3.13's default checks, on every version: what passes here passes there.
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        if server:
            ctx.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_NONE
            # No session tickets: nothing resumes sessions, and a client then reads
            # nothing after the handshake but records of its own connection.
            ctx.num_tickets = 0
        else:
            ctx.sslsocket_class = TLSSocket
        self._contexts[server] = ctx
        return ctx


_WAITALL = getattr(socket, "MSG_WAITALL", 0)
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


class TLSSocket(ssl.SSLSocket):
    """A client's TLS socket that takes the flags the multiplexer reads and writes with.

    ``ssl.SSLSocket`` refuses flags and ``sendmsg``; the multiplexer
    (:mod:`distproc.client.mux`) uses ``MSG_DONTWAIT`` (read what is there),
    ``MSG_WAITALL`` (fill the buffer), a non-blocking ``MSG_PEEK`` (is the
    connection alive?) and ``sendmsg`` of several buffers.  Here each means what
    it means on a plain socket, in terms of decrypted bytes.
    """

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        nbytes = nbytes or None
        if not flags:
            return super().recv_into(buffer, nbytes)
        view = memoryview(buffer).cast("B")
        if nbytes is not None:
            view = view[:nbytes]
        if flags & _WAITALL:
            got = 0
            while got < len(view):
                n = super().recv_into(view[got:])
                if not n:
                    break
                got += n
            return got
        if flags & _DONTWAIT:
            pending = self.pending()
            if not pending:
                raise BlockingIOError("no decrypted bytes wait to be read")
            return super().recv_into(view[:pending])
        raise ValueError(f"flags {flags:#x} are not supported on a TLS socket")

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if flags & socket.MSG_PEEK:
            if self.pending():
                return b"\0"  # decrypted bytes wait: alive
            # The raw socket says whether anything came, or the end of the stream.
            return socket.socket.recv(self, 1, flags)
        return super().recv(buflen, flags)

    def sendmsg(self, buffers: Iterable[Any], *args: Any) -> int:  # type: ignore[override]  # ancillary data and flags are not taken
        sent = 0
        for part in buffers:
            self.sendall(part)
            sent += memoryview(part).nbytes
        return sent


def refused_after_handshake(where: str, config: TLSConfig) -> str:
    """What it means that a server closed a TLS connection before its challenge.

    A TLS 1.3 server checks the client's certificate after the client's side
    of the TLS handshake is over; refused, it closes (asyncio's TLS drops the
    alert that would say why), so the client's first read meets the end.
    """
    if config.cert is None:
        return (
            f"the server at {where} closed the TLS connection before its challenge: it "
            "requires a client certificate; give --tls-cert and --tls-key (or cert=, key=)"
        )
    return (
        f"the server at {where} closed the TLS connection before its challenge: it refused "
        f"this client's certificate {config.cert!r} (not signed by the CA it trusts, "
        "expired, or not for client use); the server's log says which"
    )


def explain(exc: ssl.SSLError, where: str, *, server: bool = True) -> str:
    """One line that says what a failed TLS connection to ``where`` means.

    ``server=True``: this side is the client and ``where`` the server (else
    ``where`` is a client that a server failed to accept).
    """
    reason = getattr(exc, "reason", None) or ""
    detail = getattr(exc, "verify_message", None) or reason or str(exc)
    peer = "server" if server else "client"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the TLS certificate of the {peer} at {where} was refused: {detail}"
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return f"the {peer} at {where} gave no TLS certificate, and one is required"
    if reason in _NOT_TLS:
        return (
            f"the {peer} at {where} does not speak TLS ({detail}): a plain distproc "
            f"{peer} or a multiprocessing.managers one; use TLS on both sides or on neither"
        )
    if "ALERT" in reason:
        if server and "CERTIFICATE_REQUIRED" in reason:
            return (
                f"the server at {where} requires a client certificate ({detail}): "
                "give --tls-cert, --tls-key and --tls-ca"
            )
        return f"the {peer} at {where} refused the TLS connection ({detail})"
    return f"TLS with the {peer} at {where} failed: {detail}"
