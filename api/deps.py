"""Request dependencies: settings, the request's transaction, the caller's tenant, pagination."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from api import rate_limit
from api.client_ip import client_ip
from callpulse.settings import Settings, get_settings
from db.models import ApiKey, Tenant
from db.queries.tenants import api_key_for, note_key_used, scope_allows
from db.session import transaction

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session() -> Iterator[Session]:
    """The request's unit of work: commit after the handler, roll back if anything raised.

    Query functions never commit; a handler commits itself only where something must follow the
    commit (enqueueing, deleting files), and then says so."""
    with transaction() as session:
        yield session


# scope="function": the commit runs when the handler returns, *before* the response is sent, so a
# failed commit becomes an error response instead of a success for data that was never stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <API key>")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POST routes that change nothing (a backtest replays a rule and creates nothing): read keys may.
READ_ONLY_POSTS = frozenset({"/v1/rules/{rule_id}/backtest"})


def needed_scope(request: Request) -> str:
    """The scope a request needs: decided once here, for every route, so a new write endpoint
    cannot forget to refuse read-only keys."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    if path.startswith("/v1/keys"):
        return "admin"
    if request.method in SAFE_METHODS or path in READ_ONLY_POSTS:
        return "read"
    return "write"


def authenticate_key(conn: HTTPConnection, session: Session, settings: Settings, key: str) -> ApiKey:
    """The unrevoked key row for a presented key, under the rate limits: an address with too many
    failed attempts waits (even with a valid key, so guessing gains nothing), and so does a key
    past its requests per minute. For HTTP routes and WebSocket handshakes alike."""
    address = client_ip(conn, settings)
    if (wait := rate_limit.exceeded(settings, rate_limit.auth_failures(settings), address)) is not None:
        raise rate_limit.too_many(wait, "failed authentication attempts from your address")
    row = api_key_for(session, key)
    if row is None:
        rate_limit.count(settings, rate_limit.auth_failures(settings), address)
        # One answer for unknown and revoked keys: the difference is of no use to a caller.
        raise _unauthorized("invalid or revoked API key")
    if (wait := rate_limit.count(settings, rate_limit.key_requests(settings), str(row.id))) is not None:
        raise rate_limit.too_many(wait, "requests with this API key")
    return row


def current_api_key(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> ApiKey:
    key = api_key or (bearer.credentials if bearer is not None else None)
    if not key:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    row = authenticate_key(request, session, settings, key)
    needed = needed_scope(request)
    if not scope_allows(row.scope, needed):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail=f"this API key has scope '{row.scope}'; {request.method} "
                                   f"{getattr(request.scope.get('route'), 'path', request.url.path)} "
                                   f"needs a key with scope '{needed}'"
                                   + (" or 'admin'" if needed == "write" else ""))
    note_key_used(row)
    return row


# Who is calling (corrections record it); FastAPI resolves it once per request for both deps.
ApiKeyDep = Annotated[ApiKey, Depends(current_api_key)]


def current_tenant(key: ApiKeyDep) -> Tenant:
    return key.tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]


def validation_error(
    where: tuple[str, ...], message: str, kind: str = "value_error"
) -> RequestValidationError:
    """A 422 in the same shape FastAPI gives for its own parameter checks."""
    return RequestValidationError([{"loc": where, "msg": message, "type": kind}])


# Cursors are opaque to clients: url-safe base64 of "<created_at ISO>|<id>" of the page's last row.
def encode_cursor(created_at: datetime, recording_id: uuid.UUID) -> str:
    if created_at.tzinfo is None:  # SQLite hands back naive datetimes; we only ever store UTC
        created_at = created_at.replace(tzinfo=UTC)
    raw = f"{created_at.isoformat()}|{recording_id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
        created_text, id_text = raw.split("|")
        created_at = datetime.fromisoformat(created_text)
        if created_at.tzinfo is None:  # we only ever write offsets; this cursor was not ours
            raise ValueError("cursor time without offset")
        return created_at, uuid.UUID(id_text)
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors too
        raise validation_error(("query", "cursor"), "invalid cursor: pass next_cursor back unchanged",
                               "cursor_invalid") from exc


@dataclass(frozen=True)
class Page:
    limit: int
    after: tuple[datetime, uuid.UUID] | None


def page_params(
    limit: Annotated[int, Query(ge=1, le=200, description="Items per page.")] = 50,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page.")]
    = None,
) -> Page:
    return Page(limit=limit, after=decode_cursor(cursor) if cursor else None)


PageDep = Annotated[Page, Depends(page_params)]
