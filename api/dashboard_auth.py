"""The dashboard's cookie session: a supervisor logs in once with an API key, the browser then
carries a cookie instead of the key.

The cookie is a random token, signed with HMAC-SHA256 (CALLPULSE_SESSION_SECRET), that names a row
of `dashboard_session` (db.queries.dashboard_sessions). The row, not the cookie, is the session:
logout deletes it, revoking the key deletes it, expiry refuses it, so a copied or stolen cookie
stops working at once. Every request also checks that the key is still unrevoked."""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, Response, status
from sqlalchemy.orm import Session

from api.csrf import CsrfCheck
from api.deps import SessionDep, SettingsDep
from api.signing import session_secret, sign_token, unsign_token
from callpulse.settings import Settings
from db.models import ApiKey, Tenant
from db.queries.dashboard_sessions import OpenSession, find_session
from db.queries.tenants import key_label, scope_allows

log = logging.getLogger(__name__)

COOKIE_NAME = "callpulse_session"


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
        # Pages read the scope to leave out the write actions a read-only key may not take.
        request.state.key_scope = found.key.scope
        request.state.key_label = key_label(found.key)
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


def session_scope(request: Request) -> str:
    """The scope of the key the current dashboard session was opened with (after page_tenant)."""
    return str(getattr(request.state, "key_scope", "read") or "read")


def session_can_write(request: Request) -> bool:
    """Whether pages should offer write actions (forms, buttons) to this session."""
    return scope_allows(session_scope(request), "write")


def session_api_key(request: Request) -> ApiKey | None:
    """The API key the current dashboard session was opened with (after page_tenant): who acts,
    for actions that record it (a label correction names its key)."""
    found: OpenSession | None = getattr(request.state, "dashboard_session", None)
    return found.key if found is not None else None


# The CSRF check of every state-changing dashboard form (api.csrf): it needs a live session and
# sends the browser to the login form without one.
session_csrf = CsrfCheck(session=current_session, no_session=login_redirect)
login_csrf = CsrfCheck(login=True)
CsrfSessionDep = Annotated[OpenSession, Depends(session_csrf)]
LoginCsrfDep = Annotated[None, Depends(login_csrf)]


def writer_tenant(request: Request, checked: CsrfSessionDep) -> Tenant:
    """For dashboard forms that change data: the CSRF check passed, and sessions of read-only keys
    are refused with a reason."""
    if not scope_allows(session_scope(request), "write"):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail="this dashboard session was opened with a read-only API key; log in "
                                   "with a key of scope 'write' or 'admin' to change anything")
    return checked.tenant


PageTenantDep = Annotated[Tenant, Depends(page_tenant)]
WriterTenantDep = Annotated[Tenant, Depends(writer_tenant)]
LiveTenantDep = Annotated[Tenant, Depends(live_tenant)]
