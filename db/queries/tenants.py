"""Tenants and API keys. Keys are shown once at creation; only their SHA-256 is stored.

A key's scope says what it may do: `read` (look only), `write` (everything a tenant does with its
data: what every key could do before scopes existed, hence the default) or `admin` (also manage
the tenant's keys). Each scope includes the ones before it."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from callpulse.settings import get_settings
from db.models import ApiKey, Tenant
from db.queries.dashboard_sessions import end_sessions_for_key

KEY_PREFIX = "cpk_"
SCOPES = ("read", "write", "admin")
DEFAULT_SCOPE = "write"
# last_used_at is "when, to the minute": writing it on every request would turn reads into writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


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


def scope_allows(scope: str, needed: str) -> bool:
    """Whether a key of ``scope`` may do what needs ``needed`` (unknown scopes allow nothing)."""
    return scope in SCOPES and SCOPES.index(scope) >= SCOPES.index(needed)


def create_api_key(session: Session, tenant_id: uuid.UUID, name: str = "",
                   scope: str = DEFAULT_SCOPE) -> tuple[ApiKey, str]:
    """Returns the row and the plaintext key (the only time it exists outside the caller)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope '{scope}'; one of {', '.join(SCOPES)}")
    secret = secrets.token_urlsafe(32)
    key = f"{KEY_PREFIX}{secret}"
    row = ApiKey(tenant_id=tenant_id, name=name, key_hash=hash_key(key), prefix=key[:12], scope=scope)
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


def note_key_used(key: ApiKey, now: datetime | None = None) -> None:
    """Record that the key was just used (to the minute)."""
    now = now or datetime.now(UTC)
    last = key.last_used_at
    if last is not None and last.tzinfo is None:  # SQLite hands back naive datetimes; we store UTC
        last = last.replace(tzinfo=UTC)
    if last is None or now - last >= LAST_USED_RESOLUTION:
        key.last_used_at = now


def list_api_keys(session: Session, tenant_id: uuid.UUID) -> list[ApiKey]:
    """Every key of the tenant, revoked ones included, oldest first."""
    return list(session.scalars(
        select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at, ApiKey.id)))


def get_api_key(session: Session, key_id: uuid.UUID, tenant_id: uuid.UUID | None = None) -> ApiKey | None:
    """A key by id; with ``tenant_id`` only if it belongs to that tenant."""
    stmt = select(ApiKey).where(ApiKey.id == key_id)
    if tenant_id is not None:
        stmt = stmt.where(ApiKey.tenant_id == tenant_id)
    return session.scalar(stmt)


def revoke_api_key(session: Session, key: ApiKey, now: datetime | None = None) -> bool:
    """Revoke the key and end the dashboard sessions opened with it; False when it already was
    revoked (the first revocation time stays)."""
    if key.revoked_at is not None:
        return False
    key.revoked_at = now or datetime.now(UTC)
    end_dashboard_sessions(session, key)
    session.flush()
    return True


def end_dashboard_sessions(session: Session, key: ApiKey) -> int:
    """End the dashboard sessions opened with the key (their rows go, so their cookies open
    nothing); how many ended."""
    return end_sessions_for_key(session, key.id)


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.name)))


def key_label(key: ApiKey) -> str:
    """How a key is named to people (corrections, dashboard): its name and the first 8 hex digits
    of its id. Never characters of the secret: those would narrow a guess and end up in exports."""
    return f"{key.name or 'api key'} (key {key.id.hex[:8]})"
