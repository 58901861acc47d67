"""/v1/keys: an admin-scoped key manages its tenant's API keys (list, create, revoke).

The scope check itself is in api/deps.py (every /v1/keys route needs 'admin'). Listing never shows
a secret; revoking takes effect at once, for the API and for the dashboard sessions opened with
the key (the dashboard checks the key on every request)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, status

from api.deps import SessionDep, TenantDep
from api.schemas import ErrorOut
from api.schemas_keys import KeyCreate, KeyCreated, KeyList, KeyOut
from db.queries import tenants as queries

router = APIRouter(prefix="/v1/keys", tags=["keys"])

NOT_FOUND = "API key not found"
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid or revoked API key"},
    403: {"model": ErrorOut, "description": "The key is not admin-scoped"},
    404: {"model": ErrorOut, "description": "No such key for this tenant"},
}


@router.get("", response_model=KeyList, responses=ERRORS, summary="The tenant's keys (never their secrets)")
def list_keys(session: SessionDep, tenant: TenantDep) -> KeyList:
    return KeyList(items=[KeyOut.model_validate(k) for k in queries.list_api_keys(session, tenant.id)])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated, responses=ERRORS,
             summary="Create a key; its secret is in this answer only")
def create_key(session: SessionDep, tenant: TenantDep, body: KeyCreate) -> KeyCreated:
    row, secret = queries.create_api_key(session, tenant.id, body.name, body.scope)
    return KeyCreated(**KeyOut.model_validate(row).model_dump(), key=secret)


@router.post("/{key_id}/revoke", response_model=KeyOut, responses=ERRORS,
             summary="Revoke a key: the API and its dashboard sessions refuse it at once "
                     "(repeating it changes nothing)")
def revoke_key(session: SessionDep, tenant: TenantDep, key_id: uuid.UUID) -> KeyOut:
    row = queries.get_api_key(session, key_id, tenant.id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)
    queries.revoke_api_key(session, row)
    return KeyOut.model_validate(row)
