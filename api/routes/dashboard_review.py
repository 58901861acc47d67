"""/dashboard/review: the review queue (GET /v1/review-queue) as a page a supervisor works through:
each pick plays just its segment, says why it was picked, and takes the true label in one click.
The buttons post to /dashboard/segments/{id}/label (dashboard_segments), which runs the handler of
PUT /v1/segments/{id}/label, so a label set here is the same row the API and `train --tenant` see;
with script the corrected item is replaced in place by a one-line confirmation, without it the page
comes back without it. Read-only sessions see the queue without the buttons."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from api.dashboard_auth import PageTenantDep
from api.deps import SessionDep, SettingsDep
from api.routes import review as review_api
from api.routes.dashboard import _page
from worker.pipeline.labels import CANONICAL_LABELS

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

PAGE_SIZE = 20


@router.get("/review", response_class=HTMLResponse)
def review(request: Request, session: SessionDep, tenant: PageTenantDep, settings: SettingsDep,
           limit: Annotated[int, Query(ge=1, le=review_api.MAX_LIMIT)] = PAGE_SIZE) -> HTMLResponse:
    queue = review_api.review_queue(session, tenant, settings, limit)
    return _page(request, "review.html", {
        "tenant_name": tenant.name, "nav": "review", "items": queue.items, "limit": limit,
        "considered_calls": queue.considered_calls, "buttons": CANONICAL_LABELS,
    })
