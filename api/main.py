"""The FastAPI application: routers, error handling, OpenAPI (served offline at /docs)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError, OperationalError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.dashboard_views import STATIC_DIR
from api.observability import MetricsMiddleware
from api.observability import router as metrics_router
from api.routes import (
    alerts,
    analytics,
    dashboard,
    dashboard_alerts,
    dashboard_calls,
    dashboard_keys,
    dashboard_live,
    dashboard_review,
    dashboard_rules,
    dashboard_segments,
    dashboard_webhooks,
    health,
    keys,
    live,
    recordings,
    review,
    rules,
    segments,
    site,
    transcripts,
    webhooks,
)
from api.routes.recordings import upload_too_large
from callpulse import __version__
from callpulse.settings import Settings, get_settings
from worker.pipeline.media.decode import MediaError

log = logging.getLogger(__name__)

# Room for the multipart envelope and the metadata field around a file of exactly the limit.
MULTIPART_OVERHEAD_BYTES = 1024 * 1024

DESCRIPTION = """Emotion analytics for contact-center recordings.

Upload a call with `POST /v1/recordings`, follow its status, then read its timeline: speaker
segments in call order, each with an emotion label, scores, valence/arousal and timestamped
reasoning. Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`."""


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only where and what: echoing `input` could send a whole upload back, and `ctx` may hold
    # exception objects that are not JSON.
    errors = [{"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
              for err in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status.HTTP_422_UNPROCESSABLE_CONTENT)


class RequestSizeLimit:
    """Refuse request bodies past ``max_bytes`` before multipart parsing spools them to disk.

    Starlette spools a whole upload before the handler runs, so without this a client could fill
    the disk with one request. (FastAPI's own ``max_body_size`` answers in plain text; every error
    here is JSON.) The upload route still enforces the exact file limit while copying."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_limit: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = upload_too_large(upload_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": self.detail}, status.HTTP_413_CONTENT_TOO_LARGE)
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            # Chunked bodies declare no length: count them as they arrive.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise StarletteHTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=self.detail)
            return message

        await self.app(scope, counted_receive, send)


def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)


def _media_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MediaError)
    return JSONResponse({"detail": exc.reason}, exc.status_code)


def _unstorable_value(_: Request, exc: Exception) -> JSONResponse:
    # Last line of defence: input validation should have refused the value already.
    log.warning("database refused a value from a request: %s", exc)
    return JSONResponse({"detail": "a value in the request cannot be stored (invalid characters or number)"},
                        status.HTTP_422_UNPROCESSABLE_CONTENT)


def _out_of_range(_: Request, exc: Exception) -> JSONResponse:
    # Date arithmetic on extreme query values (year 1 or 9999) overflows; that is bad input.
    log.info("request value out of range: %s", exc)
    return JSONResponse({"detail": "a date or number in the request is out of range"},
                        status.HTTP_422_UNPROCESSABLE_CONTENT)


def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable: %s", exc)
    return JSONResponse({"detail": "the database is unavailable; retry later"},
                        status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "5"})


def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status.HTTP_500_INTERNAL_SERVER_ERROR)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; ``settings`` replaces get_settings() for this app only (tests, embedding)."""
    resolved = settings if settings is not None else get_settings()
    # /docs is our own route (site.py): the default one loads Swagger UI from a CDN; ReDoc likewise.
    app = FastAPI(title="CallPulse", version=__version__, description=DESCRIPTION, docs_url=None,
                  redoc_url=None)
    app.add_middleware(RequestSizeLimit, upload_limit=resolved.max_upload_bytes,
                       max_bytes=resolved.max_upload_bytes + MULTIPART_OVERHEAD_BYTES)
    # Outermost, so refusals of the size limit are counted too.
    app.add_middleware(MetricsMiddleware)
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(MediaError, _media_error)
    app.add_exception_handler(DataError, _unstorable_value)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(health.router)
    app.include_router(metrics_router)
    app.include_router(site.router)
    app.include_router(recordings.router)
    app.include_router(transcripts.router)
    app.include_router(segments.router)
    app.include_router(review.router)
    app.include_router(rules.router)
    app.include_router(alerts.router)
    app.include_router(webhooks.router)
    app.include_router(keys.router)
    # Supervisor dashboard and analytics.
    app.include_router(analytics.router)
    app.include_router(dashboard.router)
    app.include_router(dashboard_alerts.router)
    app.include_router(dashboard_calls.router)
    app.include_router(dashboard_live.router)
    app.include_router(dashboard_segments.router)
    app.include_router(dashboard_review.router)
    app.include_router(dashboard_rules.router)
    app.include_router(dashboard_webhooks.router)
    app.include_router(dashboard_keys.router)
    # Calls streamed in while they happen (WebSockets); keys passed in URLs never reach the logs.
    app.include_router(live.router)
    live.redact_keys_in_logs()
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    app.mount(site.DOCS_ASSETS, site.docs_assets(), name="docs-assets")
    return app


app = create_app()
