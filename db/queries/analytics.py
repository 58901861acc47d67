"""Aggregates of emotions and alerts per day, agent or queue, for the dashboard's overview and
/v1/analytics. Tenant-scoped, read-only, never commit.

Scope of every aggregate: the tenant's recordings that are ``done`` and were created in
[start, end); a call is grouped by its creation day (UTC) or by the ``agent`` / ``queue`` keys of
its free metadata. Emotions count each segment's newest prediction, of the roles asked for
(by default the customer's, and ``unknown`` for mono calls without roles).

Emotion aggregates read the per-call rollup (RecordingEmotionRollup) alone: write_emotion_rollup
fills it in the transaction that makes a recording ``done``, and migration 0004 backfilled it.
emotion_distribution_direct is the same aggregate over segments and predictions: the reference the
rollup is tested against, and the benchmark's "before"."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Date,
    Float,
    Integer,
    String,
    and_,
    cast,
    delete,
    distinct,
    exists,
    func,
    insert,
    literal_column,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from db.models import Alert, Prediction, Recording, RecordingEmotionRollup, RecordingStatus, Segment

GroupBy = Literal["day", "agent", "queue"]
GROUP_BYS: tuple[GroupBy, ...] = ("day", "agent", "queue")
SUBJECT_ROLES: tuple[str, ...] = ("customer", "unknown")
# Calls whose metadata names no agent (or queue) are grouped under this key.
NO_VALUE = "(none)"
# Role and label of the rollup row that stands for the call itself (see RecordingEmotionRollup).
CALL_ROW = "*"
Rollup = RecordingEmotionRollup


def is_newest_prediction() -> ColumnElement[bool]:
    """True for the prediction a reader sees: no later prediction exists for its segment (several
    model versions may have scored it). Served by ix_prediction_segment_newest."""
    newer = aliased(Prediction)
    return ~exists().where(
        newer.segment_id == Prediction.segment_id,
        tuple_(newer.created_at, newer.id) > tuple_(Prediction.created_at, Prediction.id),
    )


def metadata_text(key: str) -> ColumnElement[str]:
    """``metadata ->> key`` on Postgres (the expression ix_recording_tenant_agent/queue index),
    json_extract on SQLite."""
    value: ColumnElement[str] = Recording.meta[key].as_string()
    return value


def group_key(session: Session, group_by: GroupBy) -> ColumnElement[Any]:
    if group_by == "day":
        if session.get_bind().dialect.name == "postgresql":
            # The UTC calendar day, whatever the database session's time zone.
            return cast(func.timezone("UTC", Recording.created_at), Date)
        return func.date(Recording.created_at)
    return func.coalesce(metadata_text(group_by), NO_VALUE)


def rollup_group_key(group_by: GroupBy) -> ColumnElement[Any] | InstrumentedAttribute[Any]:
    """group_key over the rollup's copies of the recording's creation day, agent and queue."""
    if group_by == "day":
        return Rollup.day
    return func.coalesce(Rollup.agent if group_by == "agent" else Rollup.queue, NO_VALUE)


def _in_scope(tenant_id: uuid.UUID, start: datetime, end: datetime) -> ColumnElement[bool]:
    return and_(Recording.tenant_id == tenant_id, Recording.created_at >= start,
                Recording.created_at < end, Recording.status == RecordingStatus.done.value)


@dataclass
class LabelStats:
    segments: int = 0
    seconds: float = 0.0


@dataclass
class EmotionGroup:
    key: str
    calls: int = 0
    segments: int = 0
    seconds: float = 0.0
    labels: dict[str, LabelStats] = field(default_factory=dict)
    valence_sum: float = 0.0
    valence_n: int = 0
    arousal_sum: float = 0.0
    arousal_n: int = 0

    @property
    def mean_valence(self) -> float | None:
        return self.valence_sum / self.valence_n if self.valence_n else None

    @property
    def mean_arousal(self) -> float | None:
        return self.arousal_sum / self.arousal_n if self.arousal_n else None

    def share(self, label: str) -> float:
        """The label's share of the group's analyzed speech time."""
        stats = self.labels.get(label)
        return stats.seconds / self.seconds if stats is not None and self.seconds > 0 else 0.0


@dataclass
class AlertGroup:
    key: str
    calls: int = 0
    calls_with_alerts: int = 0
    alerts: int = 0
    by_severity: dict[str, int] = field(default_factory=dict)

    @property
    def alert_share(self) -> float:
        return self.calls_with_alerts / self.calls if self.calls else 0.0


def _key_text(value: object) -> str:
    return NO_VALUE if value is None else str(value)


def _calls_per_group(session: Session, tenant_id: uuid.UUID, group_by: GroupBy, start: datetime,
                     end: datetime) -> dict[str, int]:
    key = group_key(session, group_by).label("key")
    stmt = select(key, func.count()).where(_in_scope(tenant_id, start, end)).group_by(key)
    return {_key_text(k): int(n) for k, n in session.execute(stmt)}


def emotion_distribution(session: Session, tenant_id: uuid.UUID, group_by: GroupBy, start: datetime,
                         end: datetime, roles: Sequence[str] = SUBJECT_ROLES) -> list[EmotionGroup]:
    """Per group: calls, analyzed segments and seconds, per label segments and seconds, mean
    valence and arousal. One grouped query over the rollup (a few rows per call, found by its
    (tenant_id, created_at) index) whatever the number of calls; groups sorted by key."""
    key = rollup_group_key(group_by).label("key")
    stmt = (
        select(key, Rollup.role, Rollup.label, func.count(), func.sum(Rollup.segments),
               func.sum(Rollup.seconds), func.sum(Rollup.valence_sum), func.sum(Rollup.valence_n),
               func.sum(Rollup.arousal_sum), func.sum(Rollup.arousal_n))
        .where(Rollup.tenant_id == tenant_id, Rollup.created_at >= start, Rollup.created_at < end,
               Rollup.role.in_([*roles, CALL_ROW]))
        .group_by(key, Rollup.role, Rollup.label)
    )
    groups: dict[str, EmotionGroup] = {}
    for k, role, label, rows, n, secs, v_sum, v_n, a_sum, a_n in session.execute(stmt):
        group = groups.setdefault(_key_text(k), EmotionGroup(_key_text(k)))
        if role == CALL_ROW:
            group.calls += int(rows)
        else:
            _add(group, label, n, secs, v_sum, v_n, a_sum, a_n)
    return [groups[k] for k in sorted(groups)]


def _add(group: EmotionGroup, label: str, n: Any, secs: Any, v_sum: Any, v_n: Any, a_sum: Any,
         a_n: Any) -> None:
    stats = group.labels.setdefault(label, LabelStats())
    stats.segments += int(n)
    stats.seconds += float(secs or 0.0)
    group.segments += int(n)
    group.seconds += float(secs or 0.0)
    group.valence_sum += float(v_sum or 0.0)
    group.valence_n += int(v_n or 0)
    group.arousal_sum += float(a_sum or 0.0)
    group.arousal_n += int(a_n or 0)


def write_emotion_rollup(session: Session, recording_id: uuid.UUID) -> None:
    """(Re)write a recording's rollup rows from its segments' newest predictions, plus its CALL_ROW.
    Idempotent; call it in the transaction that sets the recording ``done``. Never commits."""
    session.flush()  # predictions and status changes pending in this session are read below
    session.execute(delete(Rollup).where(Rollup.recording_id == recording_id))
    session.execute(insert(Rollup).from_select(ROLLUP_COLUMNS,
                                               rollup_select(session, Recording.id == recording_id)))


ROLLUP_COLUMNS = ("recording_id", "tenant_id", "created_at", "day", "agent", "queue", "role", "label",
                  "segments", "seconds", "valence_sum", "valence_n", "arousal_sum", "arousal_n",
                  "model_version")


def rollup_select(session: Session, where: ColumnElement[bool]) -> Any:
    """The rollup rows (ROLLUP_COLUMNS) of the recordings matching ``where``; migration 0004's
    backfill is the same statement over every done recording."""
    call = (Recording.id, Recording.tenant_id, Recording.created_at, group_key(session, "day"),
            metadata_text("agent"), metadata_text("queue"))
    per_label = (
        select(*call, Segment.role, Prediction.label, func.count(), func.sum(Segment.end_s - Segment.start_s),
               func.coalesce(func.sum(Prediction.valence), 0.0), func.count(Prediction.valence),
               func.coalesce(func.sum(Prediction.arousal), 0.0), func.count(Prediction.arousal),
               func.max(Prediction.model_version))
        .select_from(Recording)
        .join(Segment, Segment.recording_id == Recording.id)
        .join(Prediction, Prediction.segment_id == Segment.id)
        .where(where, is_newest_prediction())
        .group_by(*call, Segment.role, Prediction.label)
    )
    star, zero = literal_column(f"'{CALL_ROW}'", String), literal_column("0", Integer)
    zero_f = literal_column("0.0", Float)
    call_row = select(*call, star, star, zero, zero_f, zero_f, zero, zero_f, zero,
                      literal_column("NULL", String)).where(where)
    return union_all(per_label, call_row)


def emotion_distribution_direct(session: Session, tenant_id: uuid.UUID, group_by: GroupBy,
                                start: datetime, end: datetime,
                                roles: Sequence[str] = SUBJECT_ROLES) -> list[EmotionGroup]:
    """emotion_distribution computed from segments and predictions instead of the rollup (same
    result; about 1 s per month of 1,000 calls a day): the reference for tests and benchmarks."""
    groups = {k: EmotionGroup(k, calls=n)
              for k, n in _calls_per_group(session, tenant_id, group_by, start, end).items()}
    key = group_key(session, group_by).label("key")
    seconds = Segment.end_s - Segment.start_s
    stmt = (
        select(key, Prediction.label, func.count(), func.sum(seconds), func.sum(Prediction.valence),
               func.count(Prediction.valence), func.sum(Prediction.arousal), func.count(Prediction.arousal))
        .select_from(Recording)
        .join(Segment, Segment.recording_id == Recording.id)
        .join(Prediction, Prediction.segment_id == Segment.id)
        .where(_in_scope(tenant_id, start, end), Segment.role.in_(list(roles)), is_newest_prediction())
        .group_by(key, Prediction.label)
    )
    for k, label, n, secs, v_sum, v_n, a_sum, a_n in session.execute(stmt):
        group = groups.setdefault(_key_text(k), EmotionGroup(_key_text(k)))
        _add(group, label, n, secs, v_sum, v_n, a_sum, a_n)
    return [groups[k] for k in sorted(groups)]


def alert_summary(session: Session, tenant_id: uuid.UUID, group_by: GroupBy, start: datetime,
                  end: datetime) -> list[AlertGroup]:
    """Per group: calls, calls with at least one alert (and their share), alerts per severity."""
    groups = {k: AlertGroup(k, calls=n)
              for k, n in _calls_per_group(session, tenant_id, group_by, start, end).items()}
    key = group_key(session, group_by).label("key")
    with_alerts = (
        select(key, func.count(distinct(Alert.recording_id)))
        .select_from(Alert).join(Recording, Recording.id == Alert.recording_id)
        .where(_in_scope(tenant_id, start, end), Alert.tenant_id == tenant_id)
        .group_by(key)
    )
    for k, n in session.execute(with_alerts):
        groups.setdefault(_key_text(k), AlertGroup(_key_text(k))).calls_with_alerts = int(n)
    per_severity = (
        select(key, Alert.severity, func.count())
        .select_from(Alert).join(Recording, Recording.id == Alert.recording_id)
        .where(_in_scope(tenant_id, start, end), Alert.tenant_id == tenant_id)
        .group_by(key, Alert.severity)
    )
    for k, severity, n in session.execute(per_severity):
        group = groups.setdefault(_key_text(k), AlertGroup(_key_text(k)))
        group.by_severity[severity] = int(n)
        group.alerts += int(n)
    return [groups[k] for k in sorted(groups)]
