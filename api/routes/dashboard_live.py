"""The dashboard's live parts, called by its script: call rows and status while calls are being
analyzed (polled JSON), the alert feed (server-sent events) and the call audio (HTTP Range)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.dashboard_auth import LiveTenantDep, session_can_write, session_token
from api.dashboard_views import templates
from api.deps import SessionDep, SettingsDep
from api.routes.dashboard_alerts import feed_filters
from db.models import RecordingStatus
from db.queries import dashboard as queries
from db.queries import recordings as recordings_q
from db.queries.dashboard_sessions import find_session
from db.session import transaction

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

MAX_WATCHED = 100
# An alert's fired_at is set inside its transaction, which may commit a little later than an
# alert fired after it: each poll looks this far back and skips the ids it already sent.
ALERT_LOOKBACK = timedelta(seconds=60)
HEARTBEAT_S = 15.0
# Ogg/Opus and friends that the stdlib table does not know.
AUDIO_TYPES = {".ogg": "audio/ogg", ".opus": "audio/ogg", ".oga": "audio/ogg", ".m4a": "audio/mp4",
               ".flac": "audio/flac", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".webm": "audio/webm",
               ".mp4": "video/mp4", ".aac": "audio/aac"}
# The stored name keeps the client's suffix: a probed-valid WAV named x.html must never come back
# as same-origin HTML. Only media types are served inline, everything else as a download, and the
# response itself may run nothing.
MEDIA_HEADERS = {"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff",
                 "Content-Security-Policy": "sandbox; default-src 'none'"}


@router.get("/live/recordings")
def live_rows(session: SessionDep, tenant: LiveTenantDep,
              ids: Annotated[list[uuid.UUID], Query(max_length=MAX_WATCHED)]) -> dict[str, Any]:
    """The calls page's rows, freshly rendered, for the calls it is watching."""
    recs = queries.calls_by_id(session, tenant.id, ids[:MAX_WATCHED])
    row = templates.env.get_template("_call_row.html")
    return {"items": [
        {"id": str(c.recording.id), "status": c.recording.status,
         "final": RecordingStatus(c.recording.status).is_final, "html": row.render(call=c)}
        for c in queries.summarize(session, recs)
    ]}


@router.get("/recordings/{recording_id}/status")
def call_status(session: SessionDep, tenant: LiveTenantDep, recording_id: uuid.UUID) -> dict[str, Any]:
    rec = recordings_q.get_recording(session, tenant.id, recording_id)
    if rec is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="recording not found")
    summary = queries.summarize(session, [rec])[0]
    return {"id": str(rec.id), "status": rec.status, "final": RecordingStatus(rec.status).is_final,
            "error": rec.error, "segments_done": summary.segments_done,
            "segments_total": summary.segments_total, "alerts": summary.alerts}


@router.get("/recordings/{recording_id}/media")
def call_media(session: SessionDep, tenant: LiveTenantDep, recording_id: uuid.UUID) -> FileResponse:
    """The uploaded file as stored. FileResponse answers Range requests (206), which the browser's
    player needs to seek without downloading the whole call first."""
    rec = recordings_q.get_recording(session, tenant.id, recording_id)
    if rec is not None and rec.media_deleted_at is not None:
        raise HTTPException(status.HTTP_410_GONE, detail=f"the media was deleted by the tenant's retention "
                            f"on {rec.media_deleted_at:%Y-%m-%d}; the analysis is kept")
    path = Path(rec.media_uri) if rec is not None else None
    if path is None or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="recording not found")
    media_type = AUDIO_TYPES.get(path.suffix.lower())
    if media_type is None:
        return FileResponse(path, media_type="application/octet-stream", filename=f"recording-{recording_id}",
                            content_disposition_type="attachment", headers=MEDIA_HEADERS)
    return FileResponse(path, media_type=media_type, content_disposition_type="inline", headers=MEDIA_HEADERS)


def _parse_since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _alerts_since(tenant_id: uuid.UUID, since: datetime, filters: queries.FeedFilters
                  ) -> list[queries.AlertRow]:
    # Its own short transaction per poll: a stream lives for hours and must hold no connection.
    with transaction() as session:
        return list(reversed(queries.recent_alerts(session, tenant_id, MAX_WATCHED, since, filters)))


def _event(row: queries.AlertRow, can_write: bool, request: Request) -> str:
    alert = row.alert
    data = {"id": str(alert.id), "recording_id": str(alert.recording_id), "severity": alert.severity,
            "rule": row.rule_name, "start_s": alert.start_s, "fired_at": alert.fired_at.isoformat(),
            "url": f"/dashboard/recordings/{alert.recording_id}#t={alert.start_s:.2f}",
            "html": templates.env.get_template("_alert_item.html").render(row=row, can_write=can_write,
                                                                         request=request)}
    # The event id is the fired_at time: a reconnecting browser sends it back as Last-Event-ID.
    return f"id: {alert.fired_at.isoformat()}\nevent: alert\ndata: {json.dumps(data)}\n\n"


def _session_valid(token: str | None) -> bool:
    with transaction() as db:
        return token is not None and find_session(db, token) is not None


async def _alert_stream(request: Request, tenant_id: uuid.UUID, since: datetime, poll_s: float,
                        session: str | None, filters: queries.FeedFilters, can_write: bool
                        ) -> AsyncIterator[str]:
    sent: dict[uuid.UUID, datetime] = {}
    cursor = since
    idle = 0.0
    checked = 0.0
    yield f"retry: {int(max(poll_s, 1.0) * 1000)}\n\n"
    while not await request.is_disconnected():
        checked += poll_s
        if checked >= HEARTBEAT_S:
            # A stream lives for hours: logout, a revoked key or expiry ends it here (the
            # browser reconnects, gets 401 and stops), not only at the next page load.
            checked = 0.0
            if not await run_in_threadpool(_session_valid, session):
                return
        rows = await run_in_threadpool(_alerts_since, tenant_id, cursor - ALERT_LOOKBACK, filters)
        for row in rows:
            # fired_at is stamped at insert but visible only at commit: an alert committed while the
            # page rendered can carry an earlier stamp. The page's script drops ids it already shows.
            if row.alert.id in sent or row.alert.fired_at < since - ALERT_LOOKBACK:
                continue
            sent[row.alert.id] = row.alert.fired_at
            cursor = max(cursor, row.alert.fired_at)
            idle = 0.0
            yield _event(row, can_write, request)
        horizon = cursor - ALERT_LOOKBACK
        sent = {k: v for k, v in sent.items() if v >= horizon}
        if idle >= HEARTBEAT_S:
            idle = 0.0
            yield ": keep-alive\n\n"  # proxies close connections that stay silent
        await asyncio.sleep(poll_s)
        idle += poll_s


@router.get("/live/alerts")
async def alert_feed(
    request: Request, tenant: LiveTenantDep, settings: SettingsDep,
    since: Annotated[str | None, Query(max_length=64)] = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
    state: Annotated[str | None, Query(max_length=16)] = None,
    severity: Annotated[str | None, Query(max_length=16)] = None,
    rule: Annotated[str | None, Query(max_length=40)] = None,
    agent: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")] = None,
    queue: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")] = None,
) -> StreamingResponse:
    """Server-sent events: one ``alert`` event per alert the tenant's rules fire from ``since``
    (or the Last-Event-ID a reconnecting browser sends; default: now), filtered like the feed."""
    filters = feed_filters(state, severity, rule, agent, queue)
    start = _parse_since(last_event_id) or _parse_since(since) or datetime.now(UTC)
    session = session_token(request, settings)
    return StreamingResponse(
        _alert_stream(request, tenant.id, start, settings.dashboard_alert_poll_s, session, filters,
                      session_can_write(request)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
