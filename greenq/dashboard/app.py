"""The dashboard as a WSGI application: requests to views, and the rules every request obeys.

Mountable anywhere: links are built from ``SCRIPT_NAME``, so under a Django or Flask URL prefix
it works as at the root. Every request is authorised first (Basic auth, when configured); every
POST must carry the session's CSRF token and is refused outright by a read-only dashboard; every
page is sent with a Content-Security-Policy that allows only the dashboard's own script.
Imports: admin, dashboard.*, exceptions, config, routing, broker.keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from greenq.config import mask_url
from greenq.dashboard import assets, live, security
from greenq.dashboard.actions import Actions
from greenq.dashboard.layout import Context, error
from greenq.dashboard.views import Views
from greenq.dashboard.web import STATUS, Request, Response
from greenq.exceptions import BrokerUnavailable, ConfigError, GreenqError

StartResponse = Callable[..., Any]
BODY_MAX = 1 << 20


class Dashboard:
    """The WSGI callable; build it with ``greenq.dashboard.wsgi_app``."""

    def __init__(self, app: Any, *, read_only: bool = False, auth: tuple[str, str] | None = None) -> None:
        self.app = app
        self.read_only = read_only
        self.guard = security.Guard(auth)
        self.feed = live.Feed(app.broker, _router(app))
        self.views = Views(app, self.feed)
        self.actions = Actions(app, self.guard)
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., Response]]] = [
            ("GET", re.compile(r"/"), self.views.overview),
            ("GET", re.compile(r"/events"), self.events),
            ("GET", re.compile(r"/api/overview"), self.views.overview_json),
            ("GET", re.compile(r"/queues/(?P<name>[^/]+)"), self.views.queue),
            ("POST", re.compile(r"/queues/(?P<name>[^/]+)/purge"), self.actions.purge),
            ("GET", re.compile(r"/tasks"), self.views.find_task),
            ("GET", re.compile(r"/tasks/(?P<task_id>[^/]{1,200})"), self.views.task),
            ("GET", re.compile(r"/dead"), self.views.dead),
            ("POST", re.compile(r"/dead/(?P<what>requeue|delete)"), self.actions.dead),
            ("GET", re.compile(r"/scheduled"), self.views.scheduled),
            ("GET", re.compile(r"/static/(?P<name>dashboard\.(?:js|css))"), self.static),
        ]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not self.guard.authorised(environ):
            start_response(
                STATUS[401],
                [
                    ("WWW-Authenticate", 'Basic realm="greenq dashboard", charset="UTF-8"'),
                    ("Content-Type", "text/plain"),
                ],
            )
            return [b"authentication required\n"]
        request = self._request(environ)
        response = self._dispatch(request)
        headers = [("Content-Type", response.content_type), *security.SECURITY_HEADERS, *response.headers]
        if request.new_session:
            headers.append(self.guard.cookie_header(request.session, request.prefix or "/"))
        start_response(STATUS[response.status], headers)
        return [response.body] if isinstance(response.body, bytes) else response.body

    def _request(self, environ: dict[str, Any]) -> Request:
        request = Request(
            environ,
            environ.get("REQUEST_METHOD", "GET").upper(),
            environ.get("PATH_INFO", "") or "/",
            environ.get("SCRIPT_NAME", "").rstrip("/"),
            parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
        )
        if request.method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(min(length, BODY_MAX)) if length > 0 else b""
            request.form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        session = self.guard.session(environ)
        request.session, request.new_session = (
            (session, False) if session else (self.guard.new_session(), True)
        )
        return request

    def context(self, request: Request) -> Context:
        return Context(
            request.prefix,
            self.guard.token(request.session),
            self.read_only,
            mask_url(self.app.conf.broker_url) or "",
            self.guard.unsign(request.arg("done")),
        )

    def _dispatch(self, request: Request) -> Response:
        allowed = False
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(request.path)
            if not match:
                continue
            allowed = True
            if method != request.method:
                continue
            ctx = self.context(request)
            refused = self._refuse(request, ctx) if method == "POST" else None
            if refused:
                return refused
            try:
                return handler(request, ctx, **match.groupdict())
            except BrokerUnavailable as exc:
                return Response(503, error(ctx, "Broker unavailable", str(exc)).encode())
            except ConfigError as exc:
                return Response(404, error(ctx, "Not found", str(exc)).encode())
            except GreenqError as exc:
                return Response(400, error(ctx, "Refused", str(exc)).encode())
        ctx = self.context(request)
        if allowed:
            return Response(
                405, error(ctx, "Method not allowed", f"{request.method} {request.path}").encode()
            )
        return Response(404, error(ctx, "Not found", f"no page {request.path}").encode())

    def _refuse(self, request: Request, ctx: Context) -> Response | None:
        """Why a POST is refused: the dashboard is read-only, or the CSRF token is wrong."""
        if self.read_only:
            return Response(
                403, error(ctx, "Read-only", "this dashboard is read-only: actions are refused").encode()
            )
        if request.new_session or not self.guard.valid_token(request.session, request.arg("csrf")):
            return Response(
                403,
                error(ctx, "Refused", "missing or wrong CSRF token: reload the page and try again").encode(),
            )
        return None

    def events(self, request: Request, ctx: Context) -> Response:
        headers = [("X-Accel-Buffering", "no")]
        return Response(200, self.feed.stream(), "text/event-stream; charset=utf-8", headers)

    def static(self, request: Request, ctx: Context, name: str) -> Response:
        kind = "application/javascript" if name.endswith(".js") else "text/css"
        return Response(200, assets.ASSETS[name], f"{kind}; charset=utf-8")


def _router(app: Any) -> Callable[[str], str | None]:
    """Task name -> queue, as the app routes it (no call-time override is known here)."""
    from greenq.routing import route_task

    def route(name: str) -> str | None:
        task = app.tasks.get(name)
        try:
            conf = app.conf
            found = route_task(
                name,
                task_queue=task.options.queue if task else None,
                routes=conf.task_routes,
                default_queue=conf.task_default_queue,
            )
        except Exception:  # a router that needs the arguments: no answer
            return None
        return found.queue

    return route
