"""The dashboard's routes, as an aiohttp application.

==========================  ==================================================
``GET /``                   the page (``static/``), live through ``/api/events``
``GET /api/status``         the report, as ``distproc status --json`` prints it
``GET /api/events``         server-sent events: one update per interval
                            (``{"report", "views", "error", "requeue", ...}``)
``POST /api/requeue``       ``{"tasks": [id, ...]}``: requeue dead letters
                            (needs the ``X-CSRF-Token`` of the page)
``GET /metrics``            Prometheus' text format (:mod:`.metrics`)
``GET /health``             200 ``{"status": "ok"}`` while the report can be
                            had, else 503; the one route open without the token
==========================  ==================================================

Every other route needs the credentials of :mod:`.access` (401 without), and
every response forbids framing and sniffing.  Nothing here blocks the loop:
the report comes from the source (on the loop, or from its thread), and
the streams are those of :class:`.live.Live`.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .access import CSRF_HEADER, Access
from .live import MAX_WATCHERS, Live, redact
from .metrics import CONTENT_TYPE, render_metrics
from .sources import SourceError

__all__ = ["MAX_REQUEUE", "make_app"]

log = logging.getLogger("distproc.web")

#: Dead letters one requeue request may name.
MAX_REQUEUE = 1000
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}
_STATIC = {"app.js": "text/javascript", "style.css": "text/css"}


def _asset(name: str) -> str:
    folder = importlib.resources.files(__package__).joinpath("static")
    return folder.joinpath(name).read_text("utf-8")


def _json(data: Any, status: int = 200, **extra: str) -> web.Response:
    return web.Response(
        text=json.dumps(data, indent=2, default=str),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **extra},
    )


def _refusal(request: web.Request, access: Access) -> web.Response:
    """401, for a page (a form for the token) or a program."""
    challenge = {"WWW-Authenticate": 'Bearer realm="distproc"'}
    if "text/html" in request.headers.get("Accept", ""):
        page = _asset("login.html")
        return web.Response(text=page, status=401, content_type="text/html", headers=challenge)
    return _json({"error": "this dashboard needs its token (see its --help)"}, 401, **challenge)


def make_app(live: Live, access: Access) -> web.Application:
    """The application serving ``live``'s source under ``access``'s rules."""

    @web.middleware
    async def guard(request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            response = await _checked(request, handler)
        except web.HTTPException as exc:  # a route that does not exist, a static file...
            exc.headers.update(_HEADERS)
            raise
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    async def _checked(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path == "/health" or request.path.startswith("/static/"):
            return await handler(request)  # what they show is no secret
        if not access.host_ok(request.url.host):
            return _json({"error": "this dashboard answers only to a loopback Host"}, 403)
        if not access.credentials_ok(request.headers, request.cookies, request.query.get("token")):
            return _refusal(request, access)
        if "token" in request.query and request.method == "GET":
            # The token came in the address: keep it in a cookie, take it out of the address.
            response = web.Response(
                status=303, headers={"Location": str(request.rel_url.without_query_params("token"))}
            )
            response.set_cookie(access.cookie, request.query["token"], httponly=True,
                                samesite="Strict", path="/")  # fmt: skip
            return response
        return await handler(request)

    async def page(request: web.Request) -> web.Response:
        html = _asset("index.html").replace("{{csrf}}", access.csrf)
        return web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store"})  # fmt: skip

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return web.Response(text=_asset(name), content_type=_STATIC[name],
                            headers={"Cache-Control": "no-cache"})  # fmt: skip

    async def status(request: web.Request) -> web.Response:
        try:
            report = await live.source.report()
        except SourceError as exc:
            return _json({"error": str(exc)}, 503)
        return _json(redact(report))

    async def metrics(request: web.Request) -> web.Response:
        try:
            report: dict[str, Any] | None = await live.source.report()
        except SourceError:
            report = None
        return web.Response(body=render_metrics(report), headers={"Content-Type": CONTENT_TYPE})

    async def health(request: web.Request) -> web.Response:
        if live.error is not None:
            return _json({"status": "unreachable", "error": live.error}, 503)
        return _json({"status": "ok"})

    async def events(request: web.Request) -> web.StreamResponse:
        if live.watchers >= MAX_WATCHERS:
            return _json({"error": f"{MAX_WATCHERS} pages are open already"}, 503)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        live.watchers += 1
        try:
            await response.prepare(request)
            seen = -1
            while True:
                seen = await live.newer_than(seen)
                if seen < 0:
                    break
                frame = b"data: " + live.encoded() + b"\n\n"
                await asyncio.wait_for(response.write(frame), live.write_timeout)
        except asyncio.TimeoutError:
            log.info("dropped a dashboard stream to %s: it read nothing for %gs",
                     request.remote, live.write_timeout)  # fmt: skip
            if request.transport is not None:
                request.transport.abort()
        except (ConnectionError, RuntimeError):
            pass  # the page went away
        finally:
            live.watchers -= 1
        return response

    async def requeue(request: web.Request) -> web.Response:
        if not access.csrf_ok(request.headers, request.host):
            return _json({"error": f"refused: a requeue needs the page's {CSRF_HEADER}"}, 403)
        try:
            ids = (await request.json())["tasks"]
        except (ValueError, KeyError, TypeError):
            ids = None
        if not isinstance(ids, list) or not all(type(t) is int for t in ids):
            return _json({"error": 'expected a JSON body {"tasks": [TASK_ID, ...]}'}, 400)
        if not 0 < len(ids) <= MAX_REQUEUE:
            return _json({"error": f"name from 1 to {MAX_REQUEUE} tasks"}, 400)
        if not live.source.can_requeue():
            return _json({"error": "this service cannot requeue dead letters"}, 501)
        try:
            done = await live.source.requeue(ids)
        except Exception as exc:
            log.exception("requeueing %s failed", ids)
            return _json({"error": f"the requeue failed: {type(exc).__name__}: {exc}"}, 500)
        live.refresh()
        return _json({"requeued": done, "missing": [t for t in ids if t not in set(done)]})

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/events", events)
    app.router.add_post("/api/requeue", requeue)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    return app
