"""/v1/alerts: alerts fired by the tenant's rules: list and filter, acknowledge, resolve."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy.orm import Session

from api.deps import PageDep, SessionDep, TenantDep, encode_cursor
from api.schemas import ErrorOut
from api.schemas_rules import AlertAction, AlertOut, AlertPage
from db.models import Alert, AlertState, utcnow
from db.queries import alerts as queries
from worker.jobs.enqueue import enqueue_deliveries
from worker.notify import events
from worker.rules.language import SEVERITIES

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

NOT_FOUND = "alert not found"
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid or revoked API key"},
    404: {"model": ErrorOut, "description": "No such alert for this tenant"},
    409: {"model": ErrorOut, "description": "The alert is already resolved"},
}


def _as_utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _tenant_alert(session: Session, tenant_id: uuid.UUID, alert_id: uuid.UUID) -> Alert:
    alert = queries.get_alert(session, tenant_id, alert_id, for_update=True)
    if alert is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)
    return alert


@router.get("", response_model=AlertPage, responses={401: ERRORS[401]}, summary="Alerts, newest first")
def list_alerts(
    session: SessionDep,
    tenant: TenantDep,
    page: PageDep,
    state: AlertState | None = None,
    severity: Annotated[str | None, Query(pattern="^(" + "|".join(SEVERITIES) + ")$")] = None,
    rule_id: uuid.UUID | None = None,
    recording_id: uuid.UUID | None = None,
    fired_after: Annotated[datetime | None, Query(description="Inclusive, ISO 8601")] = None,
    fired_before: Annotated[datetime | None, Query(description="Exclusive, ISO 8601")] = None,
) -> AlertPage:
    filters = queries.AlertFilters(
        state=state.value if state else None, severity=severity, rule_id=rule_id, recording_id=recording_id,
        fired_after=_as_utc(fired_after), fired_before=_as_utc(fired_before),
    )
    rows = queries.list_alerts(session, tenant.id, filters, page.limit + 1, page.after)
    items, more = rows[:page.limit], len(rows) > page.limit
    last = items[-1] if more else None
    return AlertPage(items=[AlertOut.build(a) for a in items],
                     next_cursor=encode_cursor(last.fired_at, last.id) if last is not None else None)


@router.get("/{alert_id}", response_model=AlertOut, responses=ERRORS, summary="One alert with its evidence")
def get_alert(session: SessionDep, tenant: TenantDep, alert_id: uuid.UUID) -> AlertOut:
    alert = queries.get_alert(session, tenant.id, alert_id)
    if alert is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)
    return AlertOut.build(alert)


@router.post("/{alert_id}/acknowledge", response_model=AlertOut, responses=ERRORS,
             summary="Someone is on it (repeating it changes nothing)")
def acknowledge(session: SessionDep, tenant: TenantDep, alert_id: uuid.UUID,
                body: AlertAction | None = None) -> AlertOut:
    alert = _tenant_alert(session, tenant.id, alert_id)
    if alert.state == AlertState.resolved.value:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="the alert is already resolved")
    if alert.state == AlertState.open.value:
        alert.state, alert.acknowledged_at = AlertState.acknowledged.value, utcnow()
        if body is not None and body.note:
            alert.note = body.note
    return AlertOut.build(alert)


@router.post("/{alert_id}/resolve", response_model=AlertOut, responses={401: ERRORS[401], 404: ERRORS[404]},
             summary="Close the alert and publish alert.resolved (repeating it changes nothing)")
def resolve(session: SessionDep, tenant: TenantDep, alert_id: uuid.UUID,
            body: AlertAction | None = None) -> AlertOut:
    alert = _tenant_alert(session, tenant.id, alert_id)
    if alert.state == AlertState.resolved.value:
        return AlertOut.build(alert)
    alert.state, alert.resolved_at = AlertState.resolved.value, utcnow()
    if body is not None and body.note:
        alert.note = body.note
    rule, rec = queries.alert_context(session, alert)
    deliveries = events.publish(session, tenant.id, "alert.resolved", alert.id,
                                events.alert_data(alert, rule, rec))
    out = AlertOut.build(alert)
    # Commit before enqueueing: the worker must find the delivery rows.
    session.commit()
    enqueue_deliveries(deliveries)
    return out
