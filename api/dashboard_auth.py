"""The dashboard's cookie session: a supervisor logs in once with an API key, the browser then
carries a cookie instead of the key.

The cookie is a random token, signed with HMAC-SHA256 (CALLPULSE_SESSION_SECRET), that names a row
of `dashboard_session` (db.queries.dashboard_sessions). The row, not the cookie, is the session:
logout deletes it, revoking the key deletes it, expiry refuses it, so a copied or stolen cookie
stops working at once. Every request also checks that the key is still unrevoked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, Response, status
from sqlalchemy.orm import Session

from api.deps import SessionDep, SettingsDep
from callpulse.settings import Settings
from db.models import Tenant
from db.queries.dashboard_sessions import OpenSession, find_session

log = logging.getLogger(__name__)

COOKIE_NAME = "callpulse_session"
SECRET_FILE = "session-secret"


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


def _sign(value: str, secret: bytes, purpose: str) -> str:
    # The purpose keeps a token signed for one cookie from being accepted as the other.
    mac = hmac.new(secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def sign_token(token: str, secret: bytes, purpose: str = "session") -> str:
    return f"{token}.{_sign(token, secret, purpose)}"


def unsign_token(cookie: str, secret: bytes, purpose: str = "session") -> str | None:
    """The token of a cookie we signed; None for anything else."""
    token, _, signature = cookie.rpartition(".")
    try:
        if token and hmac.compare_digest(signature.encode("ascii"), _sign(token, secret, purpose).encode()):
            return token
    except UnicodeError:  # a cookie with non-ASCII characters was not written by us
        pass
    return None


def set_session_cookie(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(
        COOKIE_NAME, sign_token(token, session_secret(settings)), max_age=settings.session_max_age_s,
        path="/dashboard", httponly=True, samesite="lax", secure=settings.session_cookie_secure,
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE_NAME, path="/dashboard", httponly=True, samesite="lax")


def session_token(request: Request, settings: Settings) -> str | None:
    cookie = request.cookies.get(COOKIE_NAME)
    return unsign_token(cookie, session_secret(settings)) if cookie else None


def current_session(request: Request, db: Session, settings: Settings) -> OpenSession | None:
    """The request's live dashboard session, looked up once per request. Its CSRF token is left on
    request.state for the templates' hidden form fields."""
    if hasattr(request.state, "dashboard_session"):
        cached: OpenSession | None = request.state.dashboard_session
        return cached
    token = session_token(request, settings)
    found = find_session(db, token) if token else None
    request.state.dashboard_session = found
    if found is not None:
        request.state.csrf_token = found.row.csrf_token
    return found


def login_redirect(request: Request) -> HTTPException:
    """303 to the login page, coming back here afterwards (the JSON error handler keeps headers)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":  # after logging in, show the page the form was on, not a POST URL
        target = "/dashboard"
    return HTTPException(status.HTTP_303_SEE_OTHER, detail="log in first",
                         headers={"Location": f"/dashboard/login?next={quote(target, safe='')}"})


def page_tenant(request: Request, db: SessionDep, settings: SettingsDep) -> Tenant:
    """For HTML pages: without a valid session, send the browser to the login form."""
    found = current_session(request, db, settings)
    if found is None:
        raise login_redirect(request)
    return found.tenant


def live_tenant(request: Request, db: SessionDep, settings: SettingsDep) -> Tenant:
    """For the JSON, media and event-stream endpoints scripts call: a plain 401."""
    found = current_session(request, db, settings)
    if found is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="dashboard session missing or expired")
    return found.tenant


PageTenantDep = Annotated[Tenant, Depends(page_tenant)]
LiveTenantDep = Annotated[Tenant, Depends(live_tenant)]
