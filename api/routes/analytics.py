"""/v1/analytics: emotion and alert aggregates per day, agent or queue, as JSON for BI tools."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api.deps import SessionDep, TenantDep, validation_error
from api.schemas import ROLE_PATTERN, ErrorOut
from api.schemas_analytics import (
    AlertAnalytics,
    AlertGroupOut,
    ConversationAnalytics,
    ConversationGroupOut,
    EmotionAnalytics,
    EmotionGroupOut,
)
from db.queries import analytics as queries
from db.queries.conversation_analytics import conversation_summary

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])

DEFAULT_RANGE = timedelta(days=30)
# Bounds the work of one request; BI tools page through longer histories range by range.
MAX_RANGE = timedelta(days=400)
ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut, "description": "Missing or invalid key"}}


@dataclass(frozen=True)
class Range:
    group_by: queries.GroupBy
    start: datetime
    end: datetime


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def default_end(now: datetime | None = None) -> datetime:
    """The end of the default period: midnight UTC after today, so the default is whole days (the
    overview's day columns) and still includes every call up to now."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return datetime.combine(today + timedelta(days=1), time.min, tzinfo=UTC)


def resolve_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """Defaults (shared with the dashboard's overview): ``to`` midnight UTC after today, ``from``
    30 days before ``to``, i.e. the last 30 whole days including today; naive times are UTC."""
    end_at = _utc(end) or default_end()
    start_at = _utc(start) or end_at - DEFAULT_RANGE
    if start_at >= end_at:
        raise validation_error(("query", "from"), "'from' must be earlier than 'to'")
    if end_at - start_at > MAX_RANGE:
        raise validation_error(("query", "from"), f"the range may span at most {MAX_RANGE.days} days")
    return start_at, end_at


def range_params(
    group_by: Annotated[queries.GroupBy, Query(description="day (UTC), agent or queue (call metadata)")]
    = "day",
    start: Annotated[datetime | None, Query(alias="from", description="Calls created at or after "
                                                                       "(ISO 8601; default: to − 30 days)")]
    = None,
    end: Annotated[datetime | None, Query(alias="to", description="Calls created before (default: "
                                                                 "midnight UTC after today)")]
    = None,
) -> Range:
    start_at, end_at = resolve_range(start, end)
    return Range(group_by, start_at, end_at)


RangeDep = Annotated[Range, Depends(range_params)]


def _roles(raw: str) -> list[str]:
    roles = [part.strip().lower() for part in raw.split(",") if part.strip()]
    bad = [role for role in roles if not ROLE_PATTERN.match(role)]
    if not roles or bad:
        raise validation_error(("query", "roles"), "a comma-separated list of speaker roles, e.g. customer")
    return roles


@router.get("/emotions", response_model=EmotionAnalytics, responses=ERRORS,
            summary="Emotion distribution of finished calls per day, agent or queue")
def emotions(
    session: SessionDep, tenant: TenantDep, window: RangeDep,
    roles: Annotated[str, Query(max_length=200, description="Speaker roles counted, comma-separated")]
    = ",".join(queries.SUBJECT_ROLES),
) -> EmotionAnalytics:
    role_list = _roles(roles)
    groups = queries.emotion_distribution(session, tenant.id, window.group_by, window.start, window.end,
                                          role_list)
    return EmotionAnalytics(group_by=window.group_by, start=window.start, end=window.end, roles=role_list,
                            groups=[EmotionGroupOut.build(g) for g in groups])


@router.get("/alerts", response_model=AlertAnalytics, responses=ERRORS,
            summary="Share of finished calls with alerts, and alerts per severity, per day, agent or queue")
def alerts(session: SessionDep, tenant: TenantDep, window: RangeDep) -> AlertAnalytics:
    groups = queries.alert_summary(session, tenant.id, window.group_by, window.start, window.end)
    return AlertAnalytics(group_by=window.group_by, start=window.start, end=window.end,
                          groups=[AlertGroupOut.build(g) for g in groups])


@router.get("/conversation", response_model=ConversationAnalytics, responses=ERRORS,
            summary="Conversation measures of finished calls averaged per day, agent or queue")
def conversation(session: SessionDep, tenant: TenantDep, window: RangeDep) -> ConversationAnalytics:
    groups = conversation_summary(session, tenant.id, window.group_by, window.start, window.end)
    return ConversationAnalytics(group_by=window.group_by, start=window.start, end=window.end,
                                 groups=[ConversationGroupOut(**vars(g)) for g in groups])
