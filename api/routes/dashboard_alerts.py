"""/dashboard/alerts: the alert feed with its filters, and a supervisor's actions on an alert
(acknowledge, resolve, each with a note) from the feed or from the call page.

The actions run the very handlers of POST /v1/alerts/{id}/acknowledge and /resolve, so the browser
and the API cannot disagree (a resolve publishes alert.resolved to webhooks either way). Forms work
without script (303 back to the page they came from); the dashboard's script sends them with
fetch and asks for the alert's re-rendered item instead, so the page keeps its place."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Header, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse

from api.dashboard_auth import PageTenantDep, WriterTenantDep
from api.dashboard_views import templates
from api.deps import SessionDep
from api.routes import alerts as alerts_api
from api.routes.dashboard import PAGE_SIZE, SECURITY_HEADERS, _message, _page, _safe_next
from api.schemas_rules import AlertAction
from db.models import AlertState
from db.queries import dashboard as queries
from db.queries import rules as rules_q
from worker.rules.language import SEVERITIES

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

# Sent by the dashboard's script: answer with the alert's item, not a redirect.
FRAGMENT_HEADER = "X-Dashboard-Fragment"
Text = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]


def feed_filters(state: str | None, severity: str | None, rule: str | None, agent: str | None,
                 queue: str | None) -> queries.FeedFilters:
    """The feed's query string, checked; a bad value is a 422 naming the field."""
    def bad(field: str, msg: str) -> RequestValidationError:
        return RequestValidationError([{"loc": ("query", field), "msg": msg, "type": "value_error"}])

    if state and state not in {s.value for s in AlertState}:
        raise bad("state", "expected open, acknowledged or resolved")
    if severity and severity not in SEVERITIES:
        raise bad("severity", "expected one of " + ", ".join(SEVERITIES))
    try:
        rule_id = uuid.UUID(rule) if rule else None
    except ValueError as exc:
        raise bad("rule", "expected a rule id") from exc
    return queries.FeedFilters(state=state or None, severity=severity or None, rule_id=rule_id,
                               agent=(agent or "").strip() or None, queue=(queue or "").strip() or None)


@router.get("/alerts", response_class=HTMLResponse)
def alerts(request: Request, session: SessionDep, tenant: PageTenantDep,
           state: Annotated[str | None, Query(max_length=16)] = None,
           severity: Annotated[str | None, Query(max_length=16)] = None,
           rule: Annotated[str | None, Query(max_length=40)] = None,
           agent: Text = None, queue: Text = None) -> HTMLResponse:
    filters = feed_filters(state, severity, rule, agent, queue)
    live_query = request.url.query
    return _page(request, "alerts.html", {
        "tenant_name": tenant.name, "nav": "alerts",
        "alerts": queries.recent_alerts(session, tenant.id, PAGE_SIZE, filters=filters),
        "filters": {"state": state or "", "severity": severity or "", "rule": rule or "",
                    "agent": agent or "", "queue": queue or ""},
        "rules": rules_q.list_rules(session, tenant.id), "severities": SEVERITIES,
        "states": [s.value for s in AlertState], "filtered": any((state, severity, rule, agent, queue)),
        # The stream starts where this page's list ends, so nothing fired in between is lost; it
        # applies the page's filters too.
        "stream_since": datetime.now(UTC).isoformat(), "live_query": live_query,
        "here": request.url.path + (f"?{live_query}" if live_query else ""),
    })


def _after_action(request: Request, session: SessionDep, tenant_id: uuid.UUID, alert_id: uuid.UUID,
                  next_url: str | None, fragment: str | None, context: str) -> Response:
    if not fragment:
        target = _safe_next(next_url)
        return RedirectResponse(f"{target}#alert-{alert_id}", status.HTTP_303_SEE_OTHER)
    row = queries.alert_row(session, tenant_id, alert_id)
    html = templates.env.get_template("_alert_item.html").render(
        row=row, on_call_page=context == "call", next=_safe_next(next_url), request=request)
    return HTMLResponse(html, headers=SECURITY_HEADERS)


Note = Annotated[str, Form(max_length=2000, pattern=r"^[^\x00]*$")]
Next = Annotated[str | None, Form(alias="next", max_length=2000)]
Fragment = Annotated[str | None, Header(alias=FRAGMENT_HEADER, max_length=16)]


@router.post("/alerts/{alert_id}/{action}", response_class=HTMLResponse)
def act_on_alert(request: Request, session: SessionDep, tenant: WriterTenantDep, alert_id: uuid.UUID,
                 action: str, note: Note = "", next_url: Next = None, fragment: Fragment = None) -> Response:
    """``action`` is acknowledge or resolve; the note (optional) is kept on the alert."""
    handlers = {"acknowledge": alerts_api.acknowledge, "resolve": alerts_api.resolve}
    if action not in handlers:
        return _message(request, "Unknown action", "An alert can be acknowledged or resolved.",
                        status.HTTP_404_NOT_FOUND, tenant.name)
    try:
        handlers[action](session, tenant, alert_id, AlertAction(note=note.strip()))
    except HTTPException as exc:
        return _message(request, "The alert was not changed", str(exc.detail), exc.status_code, tenant.name)
    session.commit()  # before rendering: the item shows the committed state
    return _after_action(request, session, tenant.id, alert_id, next_url, fragment,
                         "call" if fragment == "call" else "feed")
