"""The site's own pages outside /v1 and /dashboard: `/` (to the dashboard), the favicon, and the
OpenAPI page at /docs served entirely from this server.

FastAPI's default /docs loads Swagger UI from a CDN, which leaves the page blank on the isolated
networks CallPulse is deployed on; the assets come from the fastapi-offline pip package instead
(Swagger UI 5, which reads the OpenAPI 3.1 FastAPI writes), so the page needs nothing beyond this
host."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from api.dashboard_views import STATIC_DIR

router = APIRouter(include_in_schema=False)

DOCS_ASSETS = "/docs/assets"
FAVICON = STATIC_DIR / "favicon.svg"


def docs_assets() -> StaticFiles:
    """Swagger UI's JavaScript and CSS as the pip package ships them (mounted at DOCS_ASSETS)."""
    return StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static")


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard", status.HTTP_307_TEMPORARY_REDIRECT)


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    # Browsers ask for /favicon.ico on every page that names none (the JSON API, /docs).
    return FileResponse(FAVICON, media_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})


@router.get("/docs")
def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url, title=f"{request.app.title} API",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url="/favicon.ico",
        # Swagger UI would otherwise send the schema to validator.swagger.io for its badge.
        swagger_ui_parameters={"validatorUrl": None},
    )
