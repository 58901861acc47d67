"""/metrics of the API and the middleware that feeds it: requests by route template, method and
status with latency, and the live-call streams open (callpulse/metrics.py defines the series).

Routes are labelled by their template (/v1/recordings/{recording_id}), never the raw path, so ids
cannot multiply the series; a path no route matched is labelled "unmatched"."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callpulse import metrics
from callpulse.settings import get_settings

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics (text exposition format)", include_in_schema=True,
            response_class=Response)
def prometheus_metrics() -> Response:
    # Unauthenticated like /healthz: scrape it from the internal network only (no tenant data in
    # it: counts per route template, task and queue).
    body, content_type = metrics.exposition(get_settings().broker_url)
    return Response(body, media_type=content_type)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope.get("path", "").startswith("/v1/live"):
            metrics.LIVE_STREAMS.inc()
            try:
                await self.app(scope, receive, send)
            finally:
                metrics.LIVE_STREAMS.dec()
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "GET")
            metrics.HTTP_REQUESTS.labels(route, method, str(status)).inc()
            metrics.HTTP_LATENCY.labels(route, method).observe(time.perf_counter() - started)
