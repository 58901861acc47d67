"""Tenants and API keys. Keys are shown once at creation; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from callpulse.settings import get_settings
from db.models import ApiKey, Tenant
from db.queries.dashboard_sessions import end_sessions_for_key

KEY_PREFIX = "cpk_"


class TenantExists(ValueError):
    pass


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_tenant(session: Session, name: str, analyzed_roles: list[str] | None = None,
                  analyze_unknown_roles: bool = True) -> Tenant:
    if session.scalar(select(Tenant.id).where(Tenant.name == name)) is not None:
        raise TenantExists(f"tenant '{name}' already exists")
    if analyzed_roles is None:
        analyzed_roles = get_settings().default_analyzed_roles
    tenant = Tenant(name=name, analyzed_roles=list(analyzed_roles),
                    analyze_unknown_roles=analyze_unknown_roles)
    session.add(tenant)
    session.flush()
    return tenant


def get_tenant_by_name(session: Session, name: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.name == name))


def get_or_create_tenant(session: Session, name: str, analyzed_roles: list[str] | None = None) -> Tenant:
    return get_tenant_by_name(session, name) or create_tenant(session, name, analyzed_roles)


def create_api_key(session: Session, tenant_id: uuid.UUID, name: str = "") -> tuple[ApiKey, str]:
    """Returns the row and the plaintext key (the only time it exists outside the caller)."""
    secret = secrets.token_urlsafe(32)
    key = f"{KEY_PREFIX}{secret}"
    row = ApiKey(tenant_id=tenant_id, name=name, key_hash=hash_key(key), prefix=key[:12])
    session.add(row)
    session.flush()
    return row, key


def api_key_for(session: Session, key: str) -> ApiKey | None:
    """The unrevoked key row for a presented key (its tenant loads with it)."""
    return session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )


def tenant_for_key(session: Session, key: str) -> Tenant | None:
    stmt = (
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )
    return session.scalar(stmt)


def key_label(key: ApiKey) -> str:
    """How a key is named to people (corrections, dashboard): its name and the first 8 hex digits
    of its id. Never characters of the secret: those would narrow a guess and end up in exports."""
    return f"{key.name or 'api key'} (key {key.id.hex[:8]})"


def revoke_api_key(session: Session, key_id: uuid.UUID) -> ApiKey | None:
    """Revoke a key and end the dashboard sessions opened with it, in the caller's transaction.
    None when there is no such key; revoking twice keeps the first time."""
    row = session.get(ApiKey, key_id)
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    end_sessions_for_key(session, row.id)
    session.flush()
    return row
