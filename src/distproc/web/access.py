"""Who may use the dashboard: the token, the Host check and the CSRF check.

* **The token.**  An HTTP side bound to an address that is not loopback
  always needs one; so does any HTTP side given a token (from a file).  By
  default it is derived from the service's authkey (an HMAC of a fixed label,
  so the token does not reveal the key, and every dashboard of one service
  has the same token).  A request brings it as ``Authorization: Bearer
  TOKEN`` (Prometheus' ``authorization`` setting), as the cookie the page
  sets, or once as ``?token=TOKEN`` in the page's address, which sets that
  cookie.  Without it, every route but ``/health`` answers 401.
* **The Host check.**  A loopback bind without a token is open to the
  processes of this machine, as a loopback port is; the ``Host`` header must
  then name a loopback address, so a web page whose own name resolves to
  127.0.0.1 (DNS rebinding) cannot read the dashboard.
* **The CSRF check.**  A POST needs the ``X-CSRF-Token`` header with this
  process's random CSRF value, which only the page itself carries: a form or
  script of another site cannot send it.  A POST whose ``Origin`` (or
  ``Sec-Fetch-Site``) says another site is refused as well.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..addresses import is_loopback

__all__ = [
    "CSRF_HEADER",
    "Access",
    "derive_token",
    "needs_credentials",
    "read_token_file",
]

CSRF_HEADER = "X-CSRF-Token"
_LABEL = b"distproc web token v1"


def derive_token(authkey: bytes) -> str:
    """The dashboard token of a service whose authkey is ``authkey``."""
    return hmac.new(authkey, _LABEL, hashlib.sha256).hexdigest()[:32]


def needs_credentials(host: str) -> bool:
    """Whether an HTTP side bound to ``host`` must refuse requests without the token."""
    return not is_loopback(host)


def read_token_file(path: str) -> str:
    """The token in the file at ``path`` (its first line); ``ValueError`` says what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"token file {path!r} is not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"cannot read token file {path!r}: {exc.strerror or exc}") from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(token) < 16:
        raise ValueError(f"token file {path!r} must hold a token of at least 16 characters")
    return token


@dataclass(frozen=True)
class Access:
    """What a request must bring; see the module docstring.

    ``token`` is ``None`` for an open loopback bind.  ``cookie`` is the name
    of the cookie that carries the token: one per port, since browsers share
    cookies between the ports of a host.
    """

    token: str | None
    cookie: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @classmethod
    def for_bind(
        cls,
        host: str,
        port: int,
        authkey: bytes,
        token: str | None = None,
        *,
        require: bool | None = None,
    ) -> Access:
        """The access rules of an HTTP side bound to ``(host, port)``.

        ``require`` overrides :func:`needs_credentials` (for tests that stand a
        loopback bind in for another address).
        """
        required = needs_credentials(host) if require is None else require
        if token is None and required:
            token = derive_token(authkey)
        return cls(token=token, cookie=f"distproc_token_{port}")

    def credentials_ok(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], query_token: str | None
    ) -> bool:
        """Whether a request with these headers, cookies and ``?token=`` may go on."""
        if self.token is None:
            return True
        offered: list[str] = []
        scheme, _, value = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            offered.append(value.strip())
        offered.append(cookies.get(self.cookie, ""))
        offered.append(query_token or "")
        expected = self.token.encode()
        # Each candidate compared in constant time; all of them, whichever matches.
        return any([hmac.compare_digest(x.encode(), expected) for x in offered if x])

    def host_ok(self, host: str | None) -> bool:
        """Whether the ``Host`` a request names may be served (see the module docstring)."""
        if self.token is not None:
            return True
        return host is not None and is_loopback(host.strip("[]"))

    def csrf_ok(self, headers: Mapping[str, str], host: str | None) -> bool:
        """Whether a POST comes from the dashboard's own page."""
        if headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = headers.get("Origin")
        if origin is not None and host is not None and origin.split("://", 1)[-1] != host:
            return False
        return hmac.compare_digest(headers.get(CSRF_HEADER, "").encode(), self.csrf.encode())
