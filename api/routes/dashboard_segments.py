"""/dashboard/segments/{id}/label: a supervisor corrects a segment's label in place on the call
page, with an optional note; the correction names the API key the session was opened with, and
when. Runs the handlers of PUT/DELETE /v1/segments/{id}/label, so the dashboard and the API store
the same row (the corrections that training reads). Without script the form posts and comes back
to the segment; with it, the segment's item is re-rendered in place (dashboard_alerts says how), or,
from the review page, replaced by a line saying what was saved."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Header, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from api.dashboard_auth import WriterTenantDep, session_api_key
from api.dashboard_views import templates
from api.deps import SessionDep
from api.routes import segments as segments_api
from api.routes.dashboard import SECURITY_HEADERS, _message, _safe_next
from api.routes.dashboard_alerts import FRAGMENT_HEADER
from api.schemas_quality import CorrectionIn
from db.models import Tenant

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

Next = Annotated[str | None, Form(alias="next", max_length=2000)]
Fragment = Annotated[str | None, Header(alias=FRAGMENT_HEADER, max_length=16)]


def _answer(request: Request, session: SessionDep, tenant: Tenant, segment_id: uuid.UUID,
            next_url: str | None, fragment: str | None) -> Response:
    seg = segments_api.get_segment(session, tenant, segment_id)
    if not fragment:
        return RedirectResponse(f"{_safe_next(next_url)}#seg-{seg.index}", status.HTTP_303_SEE_OTHER)
    if fragment == "review" and seg.correction is not None:
        # The review page: the labelled item leaves the queue, a one-line confirmation takes its place.
        html = templates.env.get_template("_review_done.html").render(seg=seg, request=request)
        return HTMLResponse(html, headers=SECURITY_HEADERS)
    html = templates.env.get_template("_segment.html").render(
        seg=seg, can_write=True, call_url=f"/dashboard/recordings/{seg.recording_id}", request=request)
    return HTMLResponse(html, headers=SECURITY_HEADERS)


@router.post("/segments/{segment_id}/label", response_class=HTMLResponse)
def correct_label(request: Request, session: SessionDep, tenant: WriterTenantDep, segment_id: uuid.UUID,
                  label: Annotated[str, Form(max_length=40)],
                  note: Annotated[str, Form(max_length=2000)] = "",
                  next_url: Next = None, fragment: Fragment = None) -> Response:
    key = session_api_key(request)
    if key is None:  # the key was revoked between the page check and here
        return _message(request, "Log in again", "This session's API key is gone.",
                        status.HTTP_401_UNAUTHORIZED, tenant.name)
    try:
        body = CorrectionIn(label=label, note=note.strip() or None)
        segments_api.put_label(session, key, segment_id, body)
    except ValidationError as exc:
        reason = "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())
        return _message(request, "The label was not saved", reason, status.HTTP_422_UNPROCESSABLE_CONTENT,
                        tenant.name)
    except HTTPException as exc:
        return _message(request, "The label was not saved", str(exc.detail), exc.status_code, tenant.name)
    return _answer(request, session, tenant, segment_id, next_url, fragment)


@router.post("/segments/{segment_id}/label/delete", response_class=HTMLResponse)
def remove_label(request: Request, session: SessionDep, tenant: WriterTenantDep, segment_id: uuid.UUID,
                 next_url: Next = None, fragment: Fragment = None) -> Response:
    try:
        segments_api.delete_label(session, tenant, segment_id)
    except HTTPException as exc:
        return _message(request, "The correction was not removed", str(exc.detail), exc.status_code,
                        tenant.name)
    return _answer(request, session, tenant, segment_id, next_url, fragment)
