"""/dashboard: the supervisors' pages (server-rendered): login, overview, calls, a call (the alert
feed is dashboard_alerts).

Every page is tenant-scoped through the cookie session (api.dashboard_auth); another tenant's call
answers 404 exactly like a call that does not exist. Live parts are in dashboard_live."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, Response, UploadFile, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse

from api import call_view, rate_limit
from api.client_ip import client_ip
from api.csrf import issue_login_token, set_login_cookie
from api.dashboard_auth import (
    CsrfSessionDep,
    LoginCsrfDep,
    PageTenantDep,
    WriterTenantDep,
    clear_session_cookie,
    session_can_write,
    session_scope,
    session_token,
    set_session_cookie,
)
from api.dashboard_views import (
    LINE_W,
    alert_shares,
    day_columns,
    every_day,
    role_timelines,
    stacked_parts,
    templates,
    time_ticks,
    trend_points,
)
from api.deps import SessionDep, SettingsDep
from api.routes import recordings as recordings_api
from api.routes.analytics import resolve_range
from api.timeline import recording_timeline
from db.models import RecordingStatus
from db.queries import analytics as analytics_q
from db.queries import corrections as corrections_q
from db.queries import dashboard as queries
from db.queries import recordings as recordings_q
from db.queries.conversation_analytics import conversation_summary
from db.queries.dashboard_sessions import end_session, open_session
from db.queries.tenants import api_key_for
from worker.pipeline.media.decode import MediaError

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

PAGE_SIZE = 50
CHANNEL_LAYOUTS = {
    "agent-customer": {"0": "agent", "1": "customer"},
    "customer-agent": {"0": "customer", "1": "agent"},
    "mono": {},
}


# Pages load only their own script, styles, media and event stream, and may not be framed
# (clickjacking against a cookie session). Inline style attributes colour the label swatches.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def _page(request: Request, template: str, context: dict[str, Any], code: int = 200) -> HTMLResponse:
    # A read-only key's session sees no write actions (its posts are refused all the same).
    context.setdefault("can_write", session_can_write(request))
    context.setdefault("can_admin", session_scope(request) == "admin")
    return templates.TemplateResponse(request, template, context, status_code=code, headers=SECURITY_HEADERS)


def _message(request: Request, title: str, text: str, code: int, tenant_name: str | None = None
             ) -> HTMLResponse:
    return _page(request, "message.html", {"title": title, "text": text, "tenant_name": tenant_name}, code)


def _safe_next(target: str | None) -> str:
    # Only our own pages: never an absolute or scheme-relative URL (no open redirect).
    if target and target.startswith("/dashboard") and not target.startswith("//"):
        return target
    return "/dashboard"


def _login_page(request: Request, settings: SettingsDep, next_url: str | None, error: str | None = None,
                code: int = 200) -> HTMLResponse:
    # The pre-session CSRF token goes into the page (hidden field) and into a cookie.
    token = issue_login_token(request, settings)
    response = _page(request, "login.html", {"next": _safe_next(next_url), "error": error}, code)
    set_login_cookie(response, settings, token)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, settings: SettingsDep,
               next_url: Annotated[str | None, Query(alias="next")] = None) -> HTMLResponse:
    return _login_page(request, settings, next_url)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, session: SessionDep, settings: SettingsDep, _csrf: LoginCsrfDep,
          api_key: Annotated[str, Form(max_length=200)] = "",
          next_url: Annotated[str | None, Form(alias="next")] = None) -> Response:
    address = client_ip(request, settings)
    wait = (rate_limit.exceeded(settings, rate_limit.auth_failures(settings), address)
            or rate_limit.count(settings, rate_limit.login_attempts(settings), address))
    if wait is not None:
        refused = _login_page(request, settings, next_url, f"Too many login attempts from your address; "
                              f"try again in {wait} s.", status.HTTP_429_TOO_MANY_REQUESTS)
        refused.headers["Retry-After"] = str(wait)
        return refused
    key = api_key.strip()
    row = api_key_for(session, key) if key else None
    if row is None:
        rate_limit.count(settings, rate_limit.auth_failures(settings), address)
        return _login_page(request, settings, next_url, "That API key is not valid (or was revoked).",
                           status.HTTP_401_UNAUTHORIZED)
    # A session this browser already had ends here: one login, one session.
    if (old := session_token(request, settings)) is not None:
        end_session(session, old)
    _, token = open_session(session, row, settings.session_max_age_s)
    response = RedirectResponse(_safe_next(next_url), status.HTTP_303_SEE_OTHER)
    set_session_cookie(response, settings, token)
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep, settings: SettingsDep, _csrf: CsrfSessionDep) -> Response:
    """Ends the session row, so the cookie is worthless even where a copy of it survives."""
    if (token := session_token(request, settings)) is not None:
        end_session(session, token)
    response = RedirectResponse("/dashboard/login", status.HTTP_303_SEE_OTHER)
    clear_session_cookie(response)
    return response


def _day(value: str | None, field: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise RequestValidationError([{"loc": ("query", field), "msg": "expected a date YYYY-MM-DD",
                                       "type": "date_parsing"}]) from exc


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


@router.get("", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep, tenant: PageTenantDep,
             start_day: Annotated[str | None, Query(alias="from")] = None,
             end_day: Annotated[str | None, Query(alias="to")] = None) -> HTMLResponse:
    first, last = _day(start_day, "from"), _day(end_day, "to")
    # The same default period as /v1/analytics (resolve_range), so the page and the API agree.
    end = _day_start(last) + timedelta(days=1) if last else None
    start, end = resolve_range(_day_start(first) if first else None, end)
    last_day = (end - timedelta(days=1)).date()
    by_day = every_day(analytics_q.emotion_distribution(session, tenant.id, "day", start, end), start.date(),
                       last_day)
    alerts_by_day = alert_shares(analytics_q.alert_summary(session, tenant.id, "day", start, end))
    keys = [g.key for g in by_day]
    tables = {}
    for group_by in ("agent", "queue"):
        alerts = alert_shares(analytics_q.alert_summary(session, tenant.id, group_by, start, end))
        groups = analytics_q.emotion_distribution(session, tenant.id, group_by, start, end)
        tables[group_by] = [(g, stacked_parts(g, 100.0), alerts.get(g.key)) for g in groups]
    # Conversation measures as /v1/analytics/conversation gives them: all calls first, then per agent.
    conversation = (conversation_summary(session, tenant.id, None, start, end)
                    + conversation_summary(session, tenant.id, "agent", start, end))
    return _page(request, "overview.html", {
        "tenant_name": tenant.name, "nav": "overview",
        "start": start.date().isoformat(), "end": last_day.isoformat(),
        "api_query": f"from={start.isoformat()}&to={end.isoformat()}".replace("+", "%2B"),
        "columns": day_columns(by_day),
        "alert_line": trend_points(keys, [alerts_by_day[k].alert_share if k in alerts_by_day else None
                                          for k in keys], 0.0, 1.0),
        "valence_line": trend_points(keys, [g.mean_valence for g in by_day], -1.0, 1.0),
        "tables": tables, "conversation": conversation,
        "live_calls": queries.live_call_count(session, tenant.id),
        "total_calls": sum(g.calls for g in by_day), "line_w": LINE_W,
        # Day labels under the axis: about ten per line chart, twenty under the bars.
        "label_every": max(1, math.ceil(len(keys) / 10)),
    })


@router.post("/recordings/{recording_id}/delete", response_class=HTMLResponse)
def delete_recording(request: Request, session: SessionDep, tenant: WriterTenantDep, settings: SettingsDep,
                     recording_id: uuid.UUID) -> HTMLResponse:
    """Delete a call with its analysis, alerts and media, as DELETE /v1/recordings/{id} does (the
    same handler: the row is gone before its files are)."""
    rec = recordings_q.get_recording(session, tenant.id, recording_id)
    name = (rec.external_id or rec.filename or str(rec.id)) if rec is not None else ""
    if rec is not None and rec.status == RecordingStatus.live:
        # Its socket is still writing it: the call is deleted once it has ended.
        return _message(request, "Not deleted", f"The call {name} is still streaming in; delete it when "
                        "it has ended.", status.HTTP_409_CONFLICT, tenant.name)
    try:
        recordings_api.delete_recording(session, tenant, settings, recording_id)
    except HTTPException as exc:
        return _message(request, "Not deleted", str(exc.detail), exc.status_code, tenant.name)
    return _message(request, "Call deleted", f"The call {name}, its analysis, alerts and media were deleted.",
                    status.HTTP_200_OK, tenant.name)


def _refusal(exc: Exception) -> tuple[int, str]:
    """Status and readable reason of an upload the API refused."""
    if isinstance(exc, MediaError):
        return exc.status_code, exc.reason
    if isinstance(exc, RequestValidationError):
        return status.HTTP_422_UNPROCESSABLE_CONTENT, "; ".join(str(e.get("msg", "")) for e in exc.errors())
    assert isinstance(exc, HTTPException)
    return exc.status_code, str(exc.detail)


@router.post("/upload", response_class=HTMLResponse)
def upload(
    request: Request, session: SessionDep, tenant: WriterTenantDep, settings: SettingsDep,
    file: Annotated[UploadFile, File()],
    layout: Annotated[str, Form()] = "agent-customer",
    external_id: Annotated[str, Form(max_length=255)] = "",
    agent: Annotated[str, Form(max_length=200)] = "",
    queue: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """The same upload as POST /v1/recordings, from the calls page; then the call's page."""
    extra = {k: v.strip() for k, v in (("agent", agent), ("queue", queue)) if v.strip()}
    metadata: dict[str, Any] = {"channel_roles": CHANNEL_LAYOUTS.get(layout, {}), "metadata": extra}
    if external_id.strip():
        metadata["external_id"] = external_id.strip()
    try:
        accepted = recordings_api.upload_recording(session, tenant, settings, Response(), file,
                                                   json.dumps(metadata))
    except (HTTPException, MediaError, RequestValidationError) as exc:
        code, reason = _refusal(exc)
        return _message(request, "The upload was refused", reason, code, tenant.name)
    return RedirectResponse(f"/dashboard/recordings/{accepted.id}", status.HTTP_303_SEE_OTHER)


@router.get("/recordings/{recording_id}", response_class=HTMLResponse)
def recording(request: Request, session: SessionDep, tenant: PageTenantDep, settings: SettingsDep,
              recording_id: uuid.UUID) -> HTMLResponse:
    rec = recordings_q.get_recording(session, tenant.id, recording_id)
    if rec is None:
        return _message(request, "Call not found", "There is no such call for your tenant.",
                        status.HTTP_404_NOT_FOUND, tenant.name)
    timeline = recording_timeline(session, rec)
    transcript_rows = corrections_q.get_transcript(session, rec.id)
    duration = max(rec.duration_s or 0.0, max((s.end_s for s in timeline.segments), default=0.0), 1.0)
    summary = queries.summarize(session, [rec])[0]
    return _page(request, "recording.html", {
        "tenant_name": tenant.name, "nav": "recordings", "call": summary, "rec": rec,
        "final": RecordingStatus(rec.status).is_final, "segments": timeline.segments,
        "charts": role_timelines(timeline.segments, duration),
        "ticks": time_ticks(duration), "duration": duration,
        "alerts": queries.recording_alerts(session, tenant.id, rec.id),
        "ov": call_view.overview(timeline.segments), "call_url": f"/dashboard/recordings/{rec.id}",
        "low_confidence": settings.uncertain_below,
        "transcript": transcript_rows.utterances if transcript_rows is not None else [],
    })
