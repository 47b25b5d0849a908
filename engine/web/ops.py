"""For operators: `GET /healthz` (liveness, including the store), `GET /metrics` (Prometheus,
the default registry: the engine's metrics and the HTTP ones below)."""

from __future__ import annotations

import logging
import time

from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.delivery import pauses
from engine.metrics import show_paused  # the engine's metrics are registered on import, for /metrics
from engine.web.security import METHODS
from engine.web.services import services

log = logging.getLogger("lifecycle.web")
HTTP_SECONDS = Histogram(
    "lifecycle_http_request_duration_seconds",
    "HTTP requests by route, method and status",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class RequestMetrics:
    """Times every request under its route's pattern (`/preferences/{token}`), never the
    concrete path: tokens must not become label values. So that no client can grow the labels
    without bound, a method outside METHODS is "other" and a path no route matches "unmatched"."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "other"
            HTTP_SECONDS.labels(route, method, str(status)).observe(time.perf_counter() - started)


async def healthz(request: Request) -> JSONResponse:
    s = services(request)
    try:
        await s.read(_ping)
    except SQLAlchemyError:
        return JSONResponse({"status": "error", "store": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok"})


def _ping(connection: Connection) -> None:
    connection.execute(text("SELECT 1"))


def metrics(request: Request) -> Response:
    """Written in a worker thread (a plain function), so that a scrape never holds up the event loop.
    Which campaigns are paused is read from the store at each scrape: a daemon may have paused one."""
    try:
        with services(request).engine.connect().execution_options(read_only=True) as connection:
            show_paused(pauses.states(connection))
    except SQLAlchemyError:
        log.warning("/metrics: the store is unreachable; campaign pauses are shown as last read")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics, methods=["GET"])]
