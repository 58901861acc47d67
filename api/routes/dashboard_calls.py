"""/dashboard/recordings: the calls list with its search (status, dates, agent, queue, customer
emotion, the caller's call id, words said), and the live endpoint that brings new matching calls
into an open list without a reload (status changes of listed calls are dashboard_live's)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse

from api.dashboard_auth import LiveTenantDep, PageTenantDep
from api.dashboard_views import templates
from api.deps import SessionDep, decode_cursor, encode_cursor
from api.routes.dashboard import CHANNEL_LAYOUTS, PAGE_SIZE, _day, _day_start, _page
from db.models import RecordingStatus
from db.queries import dashboard as queries

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

Text = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]
# A call committed while the page rendered can carry an earlier creation time than the render:
# the live query looks this far back and the script skips rows it already shows.
LIVE_LOOKBACK = timedelta(seconds=60)
MAX_NEW = 50


@dataclass(frozen=True)
class CallSearch:
    filters: queries.CallFilters
    form: dict[str, str]  # the values as typed, for the search form and the live query

    @property
    def query(self) -> str:
        return urlencode({k: v for k, v in self.form.items() if v})


def call_search(
    status_filter: Annotated[str | None, Query(alias="status", max_length=16)] = None,
    start_day: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    end_day: Annotated[str | None, Query(alias="to", max_length=10)] = None,
    agent: Text = None, queue: Text = None,
    label: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z]*$")] = None,
    call_id: Text = None, words: Text = None,
) -> CallSearch:
    if status_filter and status_filter not in {s.value for s in RecordingStatus}:
        raise RequestValidationError([{"loc": ("query", "status"), "msg": "unknown status", "type": "enum"}])
    first, last = _day(start_day, "from"), _day(end_day, "to")

    def clean(value: str | None) -> str | None:
        return (value or "").strip() or None

    filters = queries.CallFilters(
        status=status_filter or None, created_after=_day_start(first) if first else None,
        created_before=_day_start(last) + timedelta(days=1) if last else None,
        agent=clean(agent), queue=clean(queue), label=label or None,
        call_id=clean(call_id), words=clean(words),
    )
    form = {"status": status_filter or "", "from": start_day or "", "to": end_day or "", "agent": agent or "",
            "queue": queue or "", "label": label or "", "call_id": call_id or "", "words": words or ""}
    return CallSearch(filters, form)


CallSearchDep = Annotated[CallSearch, Depends(call_search)]


@router.get("/recordings", response_class=HTMLResponse)
def recordings(request: Request, session: SessionDep, tenant: PageTenantDep, search: CallSearchDep,
               cursor: Annotated[str | None, Query(max_length=200)] = None) -> HTMLResponse:
    after = decode_cursor(cursor) if cursor else None
    rows = queries.list_calls(session, tenant.id, search.filters, PAGE_SIZE + 1, after)
    items, more = rows[:PAGE_SIZE], len(rows) > PAGE_SIZE
    next_query = None
    if more:
        params = {k: v for k, v in request.query_params.items() if k != "cursor"}
        params["cursor"] = encode_cursor(items[-1].created_at, items[-1].id)
        next_query = urlencode(params)
    since = datetime.now(UTC) - LIVE_LOOKBACK
    return _page(request, "recordings.html", {
        "tenant_name": tenant.name, "nav": "recordings", "calls": queries.summarize(session, items),
        "filters": search.form, "searched": bool(search.query),
        "statuses": [s.value for s in RecordingStatus], "next_query": next_query,
        "layouts": list(CHANNEL_LAYOUTS),
        # Only the first page grows at the top: older pages are a fixed window into the past.
        "new_calls_url": None if cursor else "/dashboard/live/recordings/new?" + urlencode(
            {"since": since.isoformat()}) + (f"&{search.query}" if search.query else ""),
    })


@router.get("/live/recordings/new")
def new_calls(session: SessionDep, tenant: LiveTenantDep, search: CallSearchDep,
              since: Annotated[datetime, Query()]) -> dict[str, Any]:
    """Rows of calls created at or after ``since`` that match the page's search, newest first."""
    since = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    start = max(since, search.filters.created_after) if search.filters.created_after else since
    recs = queries.list_calls(session, tenant.id, replace(search.filters, created_after=start), MAX_NEW)
    row = templates.env.get_template("_call_row.html")
    return {"items": [{"id": str(c.recording.id), "html": row.render(call=c)}
                      for c in queries.summarize(session, recs)]}
