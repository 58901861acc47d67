"""Cross-site request forgery defence for the dashboard: the one dependency every state-changing
dashboard route uses (tests/unit/test_csrf_contract.py fails if one does not).

Two independent checks, because a cookie session is sent by the browser whoever made the page:

1. Where the request came from. Browsers say so in ``Sec-Fetch-Site`` and ``Origin``; a form posted
   from any other site, or from a same-site page on another port or subdomain (``same-site``), is
   refused. SameSite=Lax cookies alone do not stop the latter, and do not protect login at all.
2. A token the other page cannot read. Forms carry ``csrf_token`` (scripts may send the header
   ``X-CSRF-Token``): for a logged-in supervisor it must equal the session's own token (kept in its
   database row); the login form carries a pre-session token, signed and also set as a cookie only
   our login page can have written, so a page elsewhere cannot log the victim into the attacker's
   tenant (login CSRF: the victim's uploads would then land with the attacker)."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, Response, status
from markupsafe import Markup, escape
from sqlalchemy.orm import Session

from api.client_ip import client_ip_trusted_proxy
from api.deps import SessionDep, SettingsDep
from api.signing import session_secret, sign_token, unsign_token
from callpulse.settings import Settings
from db.queries.dashboard_sessions import OpenSession

# How the check finds the request's session (api.dashboard_auth.current_session) and what it raises
# without one; passed in so that module can build on this one.
SessionLookup = Callable[[Request, Session, Settings], OpenSession | None]
NoSession = Callable[[Request], HTTPException]

FIELD = "csrf_token"
HEADER = "x-csrf-token"
LOGIN_COOKIE = "callpulse_login_csrf"
LOGIN_PURPOSE = "login-csrf"
# Sec-Fetch-Site values of a request our own pages made ("none": typed or bookmarked by the user).
OWN_SITES = {"same-origin", "none"}


def _refuse(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail=f"{reason}; reload the page and try again")


def _own_hosts(request: Request, settings: Settings) -> set[str]:
    hosts = {request.headers.get("host", "").lower()}
    # A trusted reverse proxy may rewrite Host; it says which host the browser used.
    forwarded = request.headers.get("x-forwarded-host")
    if forwarded and client_ip_trusted_proxy(request, settings):
        hosts.add(forwarded.split(",")[0].strip().lower())
    hosts.update(urlsplit(origin).netloc.lower() for origin in settings.dashboard_origins)
    hosts.discard("")
    return hosts


def origin_refusal(request: Request, settings: Settings) -> str | None:
    """Why this request does not come from one of our own pages, or None when it may."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in OWN_SITES:
        return f"form sent from another site (Sec-Fetch-Site: {site[:20]}) refused"
    origin = request.headers.get("origin")
    if origin is not None:
        netloc = urlsplit(origin).netloc.lower() if origin != "null" else ""
        if netloc not in _own_hosts(request, settings):
            return "form sent from another origin refused"
    return None


async def submitted_tokens(request: Request) -> tuple[str, ...]:
    """The tokens a form (field) or script (header) sent; either may be the right one. The form is
    parsed once per request (Starlette caches it), so reading it here costs the route nothing."""
    sent = [request.headers.get(HEADER, "")]
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(FIELD)
        sent.append(value if isinstance(value, str) else "")
    return tuple(token for token in sent if token)


def login_token(request: Request, settings: Settings) -> str | None:
    cookie = request.cookies.get(LOGIN_COOKIE)
    return unsign_token(cookie, session_secret(settings), LOGIN_PURPOSE) if cookie else None


def issue_login_token(request: Request, settings: Settings) -> str:
    """The login form's pre-session token: the one in this browser's cookie, or a new one. The page
    renders it from request.state; set_login_cookie puts it in the cookie."""
    token = login_token(request, settings) or secrets.token_urlsafe(32)
    request.state.csrf_token = token
    return token


def set_login_cookie(response: Response, settings: Settings, token: str) -> None:
    # HttpOnly and scoped to the login URL: no page, not even ours, can read it back.
    response.set_cookie(LOGIN_COOKIE, sign_token(token, session_secret(settings), LOGIN_PURPOSE),
                        path="/dashboard/login", httponly=True, samesite="strict",
                        secure=settings.session_cookie_secure)


def _matches(sent: tuple[str, ...], expected: str | None) -> bool:
    return expected is not None and any(hmac.compare_digest(token.encode(), expected.encode())
                                        for token in sent)


class CsrfCheck:
    """The dependency. ``login=True`` checks the pre-session token (the login form); otherwise the
    request needs a live session (else ``no_session`` is raised) and the session is returned."""

    def __init__(self, login: bool = False, session: SessionLookup | None = None,
                 no_session: NoSession | None = None) -> None:
        assert login or (session is not None and no_session is not None)
        self.login = login
        self.session = session
        self.no_session = no_session

    def __call__(self, request: Request, db: SessionDep, settings: SettingsDep,
                 sent: Annotated[tuple[str, ...], Depends(submitted_tokens)]) -> OpenSession | None:
        if reason := origin_refusal(request, settings):
            raise _refuse(reason)
        if self.login:
            if not _matches(sent, login_token(request, settings)):
                raise _refuse("login form token missing or expired")
            return None
        assert self.session is not None and self.no_session is not None
        found = self.session(request, db, settings)
        if found is None:
            raise self.no_session(request)
        if not _matches(sent, found.row.csrf_token):
            raise _refuse("form token missing or wrong")
        return found


def page_token(request: object) -> str:
    """The token the page being rendered puts in its forms ('' where there is none, e.g. a fragment
    rendered without its request: the script then sends the page's own token as a header)."""
    return str(getattr(request.state, "csrf_token", "")) if isinstance(request, Request) else ""


def session_key_label(request: object) -> str:
    """Which key the page's session was opened with, as people see keys (name and short id)."""
    return str(getattr(request.state, "key_label", "")) if isinstance(request, Request) else ""


def csrf_field(request: object) -> Markup:
    """The hidden input every dashboard form includes (templates: ``{{ csrf_field(request) }}``)."""
    return Markup(f'<input type="hidden" name="{FIELD}" value="{escape(page_token(request))}">')
