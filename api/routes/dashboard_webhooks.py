"""/dashboard/webhooks: the tenant's webhook endpoints in the browser: list, create (the signing
secret is shown on the answer page once and never again), enable/disable, each endpoint's delivery
log with every attempt, and redelivery.

Every action runs the handler of the matching /v1/webhooks endpoint (the URL check against private
targets included), so the browser can do nothing the API would refuse."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Form, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from api.dashboard_auth import PageTenantDep, WriterTenantDep
from api.deps import SessionDep, SettingsDep
from api.routes import webhooks as webhooks_api
from api.routes.dashboard import _message, _page
from api.schemas_webhooks import EventType, WebhookCreated, WebhookIn, WebhookPatch
from db.models import Tenant
from db.queries import webhooks as queries

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

EVENTS: tuple[str, ...] = get_args(EventType)
DELIVERIES_SHOWN = 50
# The page that shows a secret must not be kept by the browser or a proxy.
NO_STORE = {"Cache-Control": "no-store"}


def _list_page(request: Request, session: SessionDep, tenant: Tenant, form: dict[str, Any] | None = None,
               errors: dict[str, list[str]] | None = None, created: WebhookCreated | None = None,
               code: int = 200) -> HTMLResponse:
    response = _page(request, "webhooks.html", {
        "tenant_name": tenant.name, "nav": "webhooks",
        "endpoints": queries.list_endpoints(session, tenant.id),
        "events": EVENTS, "form": form or {"url": "", "events": ["alert.fired"], "description": ""},
        "errors": errors or {}, "created": created,
    }, code)
    if created is not None:
        response.headers.update(NO_STORE)
    return response


@router.get("/webhooks", response_class=HTMLResponse)
def webhooks_page(request: Request, session: SessionDep, tenant: PageTenantDep) -> HTMLResponse:
    return _list_page(request, session, tenant)


def _problems(errors: list[Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        field = loc[0] if loc and loc[0] in ("url", "events", "description") else "url"
        out.setdefault(field, []).append(str(err.get("msg", "")).removeprefix("Value error, "))
    return out


@router.post("/webhooks", response_class=HTMLResponse)
def create_webhook(request: Request, session: SessionDep, tenant: WriterTenantDep, settings: SettingsDep,
                   url: Annotated[str, Form(max_length=4000)] = "",
                   events: Annotated[list[str] | None, Form(max_length=10)] = None,
                   description: Annotated[str, Form(max_length=4000)] = "") -> HTMLResponse:
    """Register an endpoint; the answer is the list with the new secret shown once."""
    form: dict[str, Any] = {"url": url.strip(), "events": events or [], "description": description}
    try:
        # Unknown event names are refused by the model, with its message, like the API's.
        body = WebhookIn.model_validate(form)
        created = webhooks_api.create_endpoint(session, tenant, settings, body)
    except ValidationError as exc:
        errors = _problems(list(exc.errors(include_url=False, include_input=False)))
        return _list_page(request, session, tenant, form, errors, code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    except RequestValidationError as exc:
        return _list_page(request, session, tenant, form, _problems(list(exc.errors())),
                          code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    session.commit()  # the secret is shown only for an endpoint that exists
    return _list_page(request, session, tenant, created=created, code=status.HTTP_201_CREATED)


@router.post("/webhooks/{endpoint_id}/enabled")
def set_enabled(session: SessionDep, tenant: WriterTenantDep, endpoint_id: uuid.UUID,
                enabled: Annotated[str, Form(pattern="^(true|false)$")],
                next_url: Annotated[str, Form(alias="next", pattern="^(list|deliveries)$")] = "list"
                ) -> Response:
    webhooks_api.patch_endpoint(session, tenant, endpoint_id, WebhookPatch(enabled=enabled == "true"))
    target = f"/dashboard/webhooks/{endpoint_id}" if next_url == "deliveries" else "/dashboard/webhooks"
    return RedirectResponse(f"{target}#webhook-{endpoint_id}", status.HTTP_303_SEE_OTHER)


@router.get("/webhooks/{endpoint_id}", response_class=HTMLResponse)
def deliveries_page(request: Request, session: SessionDep, tenant: PageTenantDep,
                    endpoint_id: uuid.UUID) -> HTMLResponse:
    endpoint = queries.get_endpoint(session, tenant.id, endpoint_id)
    if endpoint is None:
        return _message(request, "Webhook endpoint not found", "There is no such endpoint for your tenant.",
                        status.HTTP_404_NOT_FOUND, tenant.name)
    rows = queries.list_deliveries(session, endpoint.id, None, DELIVERIES_SHOWN)
    attempts = queries.attempts_of(session, [d.id for d in rows])
    return _page(request, "webhook_deliveries.html", {
        "tenant_name": tenant.name, "nav": "webhooks", "endpoint": endpoint,
        "deliveries": [(d, attempts[d.id]) for d in rows], "shown": DELIVERIES_SHOWN,
    })


@router.post("/webhooks/deliveries/{delivery_id}/redeliver")
def redeliver(request: Request, session: SessionDep, tenant: WriterTenantDep, settings: SettingsDep,
              delivery_id: uuid.UUID) -> Response:
    """Send a delivery again (same webhook-id, a fresh series of retries), as the API does."""
    try:
        out = webhooks_api.redeliver(session, tenant, settings, delivery_id)
    except HTTPException as exc:
        return _message(request, "Not redelivered", str(exc.detail), exc.status_code, tenant.name)
    return RedirectResponse(f"/dashboard/webhooks/{out.endpoint_id}#delivery-{delivery_id}",
                            status.HTTP_303_SEE_OTHER)


@router.post("/webhooks/{endpoint_id}/delete", response_class=HTMLResponse)
def delete_webhook(request: Request, session: SessionDep, tenant: WriterTenantDep,
                   endpoint_id: uuid.UUID) -> Response:
    """Remove an endpoint and its delivery log, as DELETE /v1/webhooks/{id} does."""
    try:
        webhooks_api.delete_endpoint(session, tenant, endpoint_id)
    except HTTPException as exc:
        return _message(request, "Not deleted", str(exc.detail), exc.status_code, tenant.name)
    return RedirectResponse("/dashboard/webhooks", status.HTTP_303_SEE_OTHER)
