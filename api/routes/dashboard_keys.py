"""/dashboard/keys: an admin's page for the tenant's API keys (the keys supervisors log in with):
list without secrets, create (the key is shown on the answer page once), revoke. Revoking ends at
once every dashboard session opened with the key. Runs the handlers of /v1/keys; only sessions
opened with an admin-scoped key see or use it, as only admin keys may call /v1/keys."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from api.dashboard_auth import CsrfSessionDep, PageTenantDep, session_api_key, session_scope
from api.deps import SessionDep
from api.routes import keys as keys_api
from api.routes.dashboard import _message, _page
from api.schemas_keys import KeyCreate, KeyCreated
from db.models import Tenant
from db.queries import tenants as queries

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

NOT_ADMIN = ("Managing API keys needs a session opened with an admin-scoped key; this one was opened "
             "with a '{scope}' key.")
SCOPES = ("read", "write", "admin")


def _admin_only(request: Request) -> None:
    if session_scope(request) != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=NOT_ADMIN.format(scope=session_scope(request)))


def admin_tenant(request: Request, checked: CsrfSessionDep) -> Tenant:
    """For the key forms: the CSRF check passed and the session's key is admin-scoped."""
    _admin_only(request)
    return checked.tenant


AdminTenantDep = Annotated[Tenant, Depends(admin_tenant)]


def _keys_page(request: Request, session: SessionDep, tenant: Tenant, created: KeyCreated | None = None,
               error: str | None = None, code: int = 200) -> HTMLResponse:
    response = _page(request, "keys.html", {
        "tenant_name": tenant.name, "nav": "keys", "keys": queries.list_api_keys(session, tenant.id),
        "scopes": SCOPES, "created": created, "error": error,
        "own_key_id": own.id if (own := session_api_key(request)) is not None else None,
    }, code)
    if created is not None:
        response.headers["Cache-Control"] = "no-store"  # the page holds a secret
    return response


@router.get("/keys", response_class=HTMLResponse)
def keys_page(request: Request, session: SessionDep, tenant: PageTenantDep) -> HTMLResponse:
    if session_scope(request) != "admin":
        return _message(request, "Admins only", NOT_ADMIN.format(scope=session_scope(request)),
                        status.HTTP_403_FORBIDDEN, tenant.name)
    return _keys_page(request, session, tenant)


@router.post("/keys", response_class=HTMLResponse)
def create_key(request: Request, session: SessionDep, tenant: AdminTenantDep,
               name: Annotated[str, Form(max_length=400)] = "",
               scope: Annotated[str, Form(max_length=16)] = "write") -> HTMLResponse:
    try:
        body = KeyCreate.model_validate({"name": name.strip(), "scope": scope})
    except ValidationError as exc:
        reason = "; ".join(str(e["msg"]) for e in exc.errors(include_url=False, include_input=False))
        return _keys_page(request, session, tenant, error=reason, code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    created = keys_api.create_key(session, tenant, body)
    session.commit()  # the key is shown only once it exists
    return _keys_page(request, session, tenant, created=created, code=status.HTTP_201_CREATED)


@router.post("/keys/{key_id}/revoke")
def revoke_key(session: SessionDep, tenant: AdminTenantDep, key_id: uuid.UUID) -> Response:
    keys_api.revoke_key(session, tenant, key_id)
    return RedirectResponse(f"/dashboard/keys#key-{key_id}", status.HTTP_303_SEE_OTHER)
