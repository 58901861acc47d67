"""Alerts: idempotent insertion of fired episodes, listing and state changes. Never commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from db.models import Alert, Recording, Rule
from db.queries.upsert import insert_ignore


def insert_alert(session: Session, values: dict[str, Any]) -> uuid.UUID | None:
    """The new alert's id, or None when this (rule, recording, window) episode already has one."""
    stmt = insert_ignore(session, Alert, ["rule_id", "recording_id", "window_key"])
    return cast(uuid.UUID | None, session.scalar(stmt.values(**values).returning(Alert.id)))


@dataclass(frozen=True)
class AlertFilters:
    state: str | None = None
    severity: str | None = None
    rule_id: uuid.UUID | None = None
    recording_id: uuid.UUID | None = None
    fired_after: datetime | None = None  # inclusive
    fired_before: datetime | None = None  # exclusive


def get_alert(session: Session, tenant_id: uuid.UUID, alert_id: uuid.UUID, for_update: bool = False
              ) -> Alert | None:
    stmt = select(Alert).where(Alert.id == alert_id, Alert.tenant_id == tenant_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def list_alerts(session: Session, tenant_id: uuid.UUID, filters: AlertFilters, limit: int,
                after: tuple[datetime, uuid.UUID] | None = None) -> list[Alert]:
    """Newest first, keyset-paginated on (fired_at, id) like the recordings list."""
    stmt = select(Alert).where(Alert.tenant_id == tenant_id)
    if filters.state is not None:
        stmt = stmt.where(Alert.state == filters.state)
    if filters.severity is not None:
        stmt = stmt.where(Alert.severity == filters.severity)
    if filters.rule_id is not None:
        stmt = stmt.where(Alert.rule_id == filters.rule_id)
    if filters.recording_id is not None:
        stmt = stmt.where(Alert.recording_id == filters.recording_id)
    if filters.fired_after is not None:
        stmt = stmt.where(Alert.fired_at >= filters.fired_after)
    if filters.fired_before is not None:
        stmt = stmt.where(Alert.fired_at < filters.fired_before)
    if after is not None:
        stmt = stmt.where(tuple_(Alert.fired_at, Alert.id) < tuple_(*after))
    return list(session.scalars(stmt.order_by(Alert.fired_at.desc(), Alert.id.desc()).limit(limit)))


def alert_context(session: Session, alert: Alert) -> tuple[Rule | None, Recording | None]:
    """The rule and recording an alert's payload names (by name and external id)."""
    return session.get(Rule, alert.rule_id), session.get(Recording, alert.recording_id)


def recordings_in_range(session: Session, tenant_id: uuid.UUID, created_from: datetime,
                        created_to: datetime, limit: int) -> list[Recording]:
    """The backtest's recordings: created in [from, to), newest first."""
    stmt = (
        select(Recording)
        .where(Recording.tenant_id == tenant_id, Recording.created_at >= created_from,
               Recording.created_at < created_to)
        .order_by(Recording.created_at.desc(), Recording.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))
