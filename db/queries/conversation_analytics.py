"""Conversation measures averaged per day, agent or queue (GET /v1/analytics/conversation).

Reads the measures each call stored when it became done (recording.conversation), so an aggregate
is one grouped scan of the tenant's finished calls in the range, with no segment joins.
Tenant-scoped, read-only, never commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, func, literal, select
from sqlalchemy.orm import Session

from db.models import Recording, RecordingStatus
from db.queries.analytics import GroupBy, group_key

# Roles whose talk share is averaged: the two sides of a contact-center call.
SHARE_ROLES = ("agent", "customer")


@dataclass(frozen=True)
class ConversationGroup:
    key: str
    calls: int
    talk_share: dict[str, float | None]
    non_talk_share: float | None
    interruptions: float | None
    duration_s: float | None
    sentiment: float | None
    sentiment_trend: float | None


def _number(*path: str) -> ColumnElement[Any]:
    return cast(ColumnElement[Any], Recording.conversation[path].as_float())


def conversation_summary(session: Session, tenant_id: uuid.UUID, group_by: GroupBy | None, start: datetime,
                         end: datetime) -> list[ConversationGroup]:
    """Averages per group; ``group_by=None`` gives one group, ``all``, over every call in the range
    (the overview's first row), or none when the range has no call with measures."""
    key = group_key(session, group_by) if group_by is not None else literal("all")
    columns = [func.avg(_number("talk", role, "share")) for role in SHARE_ROLES]
    stmt = (
        select(key.label("key"), func.count(), *columns, func.avg(_number("non_talk", "share")),
               func.avg(_number("interruptions", "count")), func.avg(_number("duration_s")),
               func.avg(_number("sentiment", "overall")), func.avg(_number("sentiment", "trend")))
        .where(Recording.tenant_id == tenant_id, Recording.status == RecordingStatus.done.value,
               Recording.created_at >= start, Recording.created_at < end,
               Recording.conversation.is_not(None))
    )
    # Without groups an aggregate answers one row even over no calls: keep "no calls" an empty list.
    stmt = stmt.group_by(key).order_by(key) if group_by is not None else stmt.having(func.count() > 0)
    out = []
    for row in session.execute(stmt):
        shares = row[2: 2 + len(SHARE_ROLES)]
        rest = row[2 + len(SHARE_ROLES):]
        out.append(ConversationGroup(
            key=str(row[0]), calls=int(row[1]),
            talk_share={role: _round(v) for role, v in zip(SHARE_ROLES, shares, strict=True)},
            non_talk_share=_round(rest[0]), interruptions=_round(rest[1]), duration_s=_round(rest[2]),
            sentiment=_round(rest[3]), sentiment_trend=_round(rest[4])))
    return out


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)
