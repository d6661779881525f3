"""The web layer: a live dashboard and Prometheus metrics for a distproc server.

An aiohttp application (:mod:`.app`) that runs on the loop of the server it
shows (:func:`attach`), or on a loop of its own for a server elsewhere
(``distproc dashboard``).  It reads the server's status report, the one
``distproc status --json`` prints, through a source (:mod:`.sources`), and
derives what needs more than one report (:mod:`.history`).  Who may use it
is decided in :mod:`.access`.

It needs the ``web`` extra (aiohttp, prometheus_client): importing this
package without them raises :class:`~distproc.errors.MissingExtraError`
naming the pip command.
"""

from ..errors import MissingExtraError

try:
    import aiohttp  # noqa: F401  (checked here, used by the modules below)
    import prometheus_client  # noqa: F401
except ModuleNotFoundError as _missing:
    raise MissingExtraError(
        f"the dashboard needs {_missing.name or 'aiohttp'}, which is not installed: "
        "pip install 'distproc[web]'"
    ) from None

from .access import Access, derive_token, needs_credentials, read_token_file
from .metrics import METRICS, render_metrics
from .server import HttpSide, attach, bind
from .sources import REQUEUE_METHOD, PollingSource, ServerSource, SourceError, StatusSource

__all__ = [
    "METRICS",
    "REQUEUE_METHOD",
    "Access",
    "HttpSide",
    "PollingSource",
    "ServerSource",
    "SourceError",
    "StatusSource",
    "attach",
    "bind",
    "derive_token",
    "needs_credentials",
    "read_token_file",
    "render_metrics",
]
