"""The dashboard's cookie session: a supervisor logs in once with an API key, the browser then
carries a signed cookie instead of the key.

The cookie holds the tenant id, the SHA-256 of the key (never the key) and an expiry, signed with
HMAC-SHA256. Every request checks the signature and that the key is still an unrevoked key of that
tenant, so revoking a key also ends the dashboard sessions opened with it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, Response, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import SessionDep, SettingsDep
from callpulse.settings import Settings
from db.models import ApiKey, Tenant
from db.queries.tenants import scope_allows

log = logging.getLogger(__name__)

COOKIE_NAME = "callpulse_session"
SECRET_FILE = "session-secret"


@dataclass(frozen=True)
class DashboardSession:
    tenant_id: uuid.UUID
    key_hash: str
    expires_at: int


@lru_cache
def _stored_secret(data_dir: Path) -> str:
    """A secret generated once per data directory, so it survives restarts and is shared by the
    workers of one host without anyone having configured it."""
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another worker process may have created it a moment ago and not written it yet.
        for _ in range(50):
            if stored := path.read_text().strip():
                return stored
            time.sleep(0.02)
        raise RuntimeError(f"{path} is empty: delete it or set CALLPULSE_SESSION_SECRET") from None
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(48))
    log.warning("CALLPULSE_SESSION_SECRET is not set: dashboard cookies are signed with a generated "
                "secret kept in %s; set the variable when several hosts serve the dashboard", path)
    return path.read_text().strip()


def session_secret(settings: Settings) -> bytes:
    return (settings.session_secret or _stored_secret(settings.data_dir)).encode("utf-8")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(payload: str, secret: bytes) -> str:
    return _b64(hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest())


def encode_session(session: DashboardSession, secret: bytes) -> str:
    body = json.dumps({"t": str(session.tenant_id), "k": session.key_hash, "e": session.expires_at},
                      separators=(",", ":"))
    payload = _b64(body.encode("utf-8"))
    return f"{payload}.{_sign(payload, secret)}"


def decode_session(cookie: str, secret: bytes, now: float | None = None) -> DashboardSession | None:
    """None for anything not signed by us, malformed or expired."""
    payload, _, signature = cookie.partition(".")
    try:
        if not payload or not hmac.compare_digest(signature.encode("ascii"), _sign(payload, secret).encode()):
            return None
    except UnicodeError:  # a cookie with non-ASCII characters was not written by us
        return None
    try:
        body = json.loads(_unb64(payload))
        parsed = DashboardSession(uuid.UUID(body["t"]), str(body["k"]), int(body["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return parsed if parsed.expires_at > (now if now is not None else time.time()) else None


def set_session_cookie(response: Response, settings: Settings, tenant_id: uuid.UUID, key_hash: str) -> None:
    session = DashboardSession(tenant_id, key_hash, int(time.time()) + settings.session_max_age_s)
    response.set_cookie(
        COOKIE_NAME, encode_session(session, session_secret(settings)), max_age=settings.session_max_age_s,
        path="/dashboard", httponly=True, samesite="lax", secure=settings.session_cookie_secure,
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE_NAME, path="/dashboard", httponly=True, samesite="lax")


def tenant_for_session(db: Session, session: DashboardSession) -> Tenant | None:
    stmt = (
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(Tenant.id == session.tenant_id, ApiKey.key_hash == session.key_hash,
               ApiKey.revoked_at.is_(None))
    )
    return db.scalar(stmt)


def _session_tenant(request: Request, db: Session, settings: Settings) -> Tenant | None:
    cookie = request.cookies.get(COOKIE_NAME)
    if not cookie:
        return None
    session = decode_session(cookie, session_secret(settings))
    tenant = tenant_for_session(db, session) if session is not None else None
    if tenant is not None and session is not None:
        # Pages read the scope to leave out the write actions a read-only key may not take.
        request.state.key_scope = db.scalar(select(ApiKey.scope).where(ApiKey.key_hash == session.key_hash))
    return tenant


def login_redirect(request: Request) -> HTTPException:
    """303 to the login page, coming back here afterwards (the JSON error handler keeps headers)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTTPException(status.HTTP_303_SEE_OTHER, detail="log in first",
                         headers={"Location": f"/dashboard/login?next={quote(target, safe='')}"})


def page_tenant(request: Request, db: SessionDep, settings: SettingsDep) -> Tenant:
    """For HTML pages: without a valid session, send the browser to the login form."""
    tenant = _session_tenant(request, db, settings)
    if tenant is None:
        raise login_redirect(request)
    return tenant


def live_tenant(request: Request, db: SessionDep, settings: SettingsDep) -> Tenant:
    """For the JSON, media and event-stream endpoints scripts call: a plain 401."""
    tenant = _session_tenant(request, db, settings)
    if tenant is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="dashboard session missing or expired")
    return tenant


def session_scope(request: Request) -> str:
    """The scope of the key the current dashboard session was opened with (after page_tenant)."""
    return str(getattr(request.state, "key_scope", "read") or "read")


def session_can_write(request: Request) -> bool:
    """Whether pages should offer write actions (forms, buttons) to this session."""
    return scope_allows(session_scope(request), "write")


def writer_tenant(request: Request, tenant: Annotated[Tenant, Depends(page_tenant)]) -> Tenant:
    """For dashboard forms that change data: sessions of read-only keys are refused with a reason."""
    if not scope_allows(session_scope(request), "write"):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail="this dashboard session was opened with a read-only API key; log in "
                                   "with a key of scope 'write' or 'admin' to change anything")
    return tenant


PageTenantDep = Annotated[Tenant, Depends(page_tenant)]
WriterTenantDep = Annotated[Tenant, Depends(writer_tenant)]
LiveTenantDep = Annotated[Tenant, Depends(live_tenant)]
