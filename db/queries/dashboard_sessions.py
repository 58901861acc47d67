"""Dashboard sessions kept in the database, so that logging out, revoking a key and expiry end them
for good: a cookie is only a pointer to a row, and without the row it opens nothing.

The cookie's token is random (256 bits); rows are keyed by its SHA-256, like API keys."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.models import ApiKey, DashboardSession, Tenant


@dataclass(frozen=True)
class OpenSession:
    row: DashboardSession
    tenant: Tenant
    key: ApiKey


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def open_session(session: Session, key: ApiKey, max_age_s: int, now: datetime | None = None
                 ) -> tuple[DashboardSession, str]:
    """A new session for a key that just logged in; returns the row and the cookie token (which
    exists nowhere else). Expired rows of every tenant are cleared on the way: logins are rare."""
    now = now or datetime.now(UTC)
    session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    row = DashboardSession(id=_digest(token), tenant_id=key.tenant_id, api_key_id=key.id,
                           csrf_token=secrets.token_urlsafe(32), created_at=now,
                           expires_at=now + timedelta(seconds=max_age_s))
    session.add(row)
    session.flush()
    return row, token


def find_session(session: Session, token: str, now: datetime | None = None) -> OpenSession | None:
    """The live session a cookie token points to: not ended, not expired, its key not revoked."""
    stmt = (
        select(DashboardSession, Tenant, ApiKey)
        .join(ApiKey, ApiKey.id == DashboardSession.api_key_id)
        .join(Tenant, Tenant.id == DashboardSession.tenant_id)
        .where(DashboardSession.id == _digest(token),
               DashboardSession.expires_at > (now or datetime.now(UTC)),
               ApiKey.revoked_at.is_(None), ApiKey.tenant_id == DashboardSession.tenant_id)
    )
    found = session.execute(stmt).first()
    return OpenSession(*found) if found is not None else None


def end_session(session: Session, token: str) -> bool:
    """Logout: the row goes, so the cookie (wherever a copy of it lives) opens nothing."""
    result = session.execute(delete(DashboardSession).where(DashboardSession.id == _digest(token)))
    return bool(getattr(result, "rowcount", 0))


def end_sessions_for_key(session: Session, api_key_id: uuid.UUID) -> int:
    """End every dashboard session opened with this API key (call it when the key is revoked);
    returns how many ended. The caller's transaction makes it final."""
    result = session.execute(delete(DashboardSession).where(DashboardSession.api_key_id == api_key_id))
    return int(getattr(result, "rowcount", 0) or 0)
