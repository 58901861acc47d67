"""Reads behind the dashboard pages: the filtered call list with each call's emotional summary,
live status, a call's alerts and the tenant's alert feed. Tenant-scoped; never commit."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, String, cast, exists, func, select, true
from sqlalchemy.orm import Session

from db.models import Alert, Prediction, Recording, RecordingStatus, Rule, Segment, Transcript
from db.queries.analytics import SUBJECT_ROLES, is_newest_prediction, metadata_text
from db.queries.recordings import RecordingFilters, filter_recordings, newest_first_page


@dataclass(frozen=True)
class CallFilters(RecordingFilters):
    agent: str | None = None
    queue: str | None = None
    label: str | None = None  # a customer segment of the call carries this label
    call_id: str | None = None  # the caller's external id starts with this (any case)
    words: str | None = None  # said in the call's transcript (any case)


@dataclass(frozen=True)
class WorstMoment:
    """The customer's most negative segment: where a supervisor should listen first."""

    start_s: float
    end_s: float
    valence: float
    label: str


@dataclass
class CallSummary:
    recording: Recording
    dominant_label: str | None = None
    dominant_share: float | None = None  # of the customer's analyzed speech time
    worst: WorstMoment | None = None
    alerts: int = 0
    segments_done: int = 0
    segments_total: int = 0

    @property
    def roles(self) -> list[str]:
        return sorted(set((self.recording.channel_roles or {}).values())) or ["unknown"]


def list_calls(session: Session, tenant_id: uuid.UUID, filters: CallFilters, limit: int,
               after: tuple[datetime, uuid.UUID] | None = None) -> list[Recording]:
    """Newest first, keyset-paginated on (created_at, id) like /v1/recordings."""
    stmt = filter_recordings(select(Recording).where(Recording.tenant_id == tenant_id), filters)
    if filters.agent is not None:
        stmt = stmt.where(metadata_text("agent") == filters.agent)
    if filters.queue is not None:
        stmt = stmt.where(metadata_text("queue") == filters.queue)
    if filters.label is not None:
        stmt = stmt.where(
            exists()
            .where(Segment.recording_id == Recording.id, Segment.role.in_(SUBJECT_ROLES),
                   Prediction.segment_id == Segment.id, Prediction.label == filters.label,
                   is_newest_prediction())
        )
    if filters.call_id is not None:
        stmt = stmt.where(Recording.external_id.ilike(_like(filters.call_id) + "%", escape="\\"))
    if filters.words is not None:
        stmt = stmt.where(_transcript_says(session, filters.words))
    return newest_first_page(session, stmt, limit, after)


def _like(text: str) -> str:
    """``text`` taken literally inside a LIKE pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _transcript_says(session: Session, words: str) -> ColumnElement[bool]:
    """The recording's transcript has an utterance whose text contains ``words``."""
    pattern = "%" + _like(words) + "%"
    if session.get_bind().dialect.name == "postgresql":
        utterance = func.jsonb_array_elements(Transcript.utterances).table_valued("value").alias("u")
        text = utterance.c.value.op("->>")("text")
        return exists(select(1).select_from(Transcript).join(utterance, true()).where(
            Transcript.recording_id == Recording.id, text.ilike(pattern, escape="\\")))
    # SQLite keeps JSON as text: the whole list is searched (keys included), close enough there.
    return exists().where(Transcript.recording_id == Recording.id,
                          cast(Transcript.utterances, String).ilike(pattern, escape="\\"))


def calls_by_id(session: Session, tenant_id: uuid.UUID, ids: Sequence[uuid.UUID]) -> list[Recording]:
    """The tenant's recordings among ``ids``; other tenants' ids are silently not found."""
    if not ids:
        return []
    stmt = select(Recording).where(Recording.tenant_id == tenant_id, Recording.id.in_(list(ids)))
    return list(session.scalars(stmt))


def summarize(session: Session, recordings: Sequence[Recording]) -> list[CallSummary]:
    """Each call's customer summary, alert count and progress: three queries for the whole page."""
    summaries = {rec.id: CallSummary(rec) for rec in recordings}
    if not summaries:
        return []
    ids = list(summaries)
    seconds = Segment.end_s - Segment.start_s
    customer = (
        select(Segment.recording_id, Segment.start_s, Segment.end_s, seconds, Prediction.label,
               Prediction.valence)
        .join(Prediction, Prediction.segment_id == Segment.id)
        .where(Segment.recording_id.in_(ids), Segment.role.in_(SUBJECT_ROLES), is_newest_prediction())
    )
    time_per_label: dict[uuid.UUID, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for rec_id, start_s, end_s, secs, label, valence in session.execute(customer):
        time_per_label[rec_id][label] += float(secs)
        summary = summaries[rec_id]
        if valence is not None and (summary.worst is None or valence < summary.worst.valence):
            summary.worst = WorstMoment(start_s, end_s, valence, label)
    for rec_id, per_label in time_per_label.items():
        label, secs = max(per_label.items(), key=lambda item: (item[1], item[0]))
        total = sum(per_label.values())
        summaries[rec_id].dominant_label = label
        summaries[rec_id].dominant_share = secs / total if total > 0 else None

    alert_counts = select(Alert.recording_id, func.count()).where(Alert.recording_id.in_(ids)).group_by(
        Alert.recording_id)
    for rec_id, n in session.execute(alert_counts):
        summaries[rec_id].alerts = int(n)

    has_prediction = exists().where(Prediction.segment_id == Segment.id)
    progress = (
        select(Segment.recording_id, func.count().filter(Segment.analyzed.is_(True)),
               func.count().filter(Segment.analyzed.is_(True), has_prediction))
        .where(Segment.recording_id.in_(ids))
        .group_by(Segment.recording_id)
    )
    for rec_id, total, done in session.execute(progress):
        summaries[rec_id].segments_total, summaries[rec_id].segments_done = int(total), int(done)
    return [summaries[rec.id] for rec in recordings]


@dataclass(frozen=True)
class AlertRow:
    alert: Alert
    rule_name: str
    recording_name: str  # the caller's external id, else the uploaded file's name
    call_live: bool = False  # the call is still streaming: a supervisor can still act on it


def _alert_rows(session: Session, stmt_where: list[ColumnElement[bool]], limit: int) -> list[AlertRow]:
    stmt = (
        select(Alert, Rule.name, Recording.external_id, Recording.filename, Recording.status)
        .join(Rule, Rule.id == Alert.rule_id)
        .join(Recording, Recording.id == Alert.recording_id)
        .where(*stmt_where)
        .order_by(Alert.fired_at.desc(), Alert.id.desc())
        .limit(limit)
    )
    return [AlertRow(alert, rule_name, external_id or filename or str(alert.recording_id),
                     call_live=rec_status == RecordingStatus.live)
            for alert, rule_name, external_id, filename, rec_status in session.execute(stmt)]


@dataclass(frozen=True)
class FeedFilters:
    """What the alert feed shows; None means any."""

    state: str | None = None
    severity: str | None = None
    rule_id: uuid.UUID | None = None
    agent: str | None = None
    queue: str | None = None


def recent_alerts(session: Session, tenant_id: uuid.UUID, limit: int, fired_since: datetime | None = None,
                  filters: FeedFilters | None = None) -> list[AlertRow]:
    """The tenant's newest alerts matching ``filters``, optionally only those fired at or after
    ``fired_since``."""
    where = [Alert.tenant_id == tenant_id]
    if fired_since is not None:
        where.append(Alert.fired_at >= fired_since)
    f = filters or FeedFilters()
    if f.state is not None:
        where.append(Alert.state == f.state)
    if f.severity is not None:
        where.append(Alert.severity == f.severity)
    if f.rule_id is not None:
        where.append(Alert.rule_id == f.rule_id)
    if f.agent is not None:
        where.append(metadata_text("agent") == f.agent)
    if f.queue is not None:
        where.append(metadata_text("queue") == f.queue)
    return _alert_rows(session, where, limit)


def alert_row(session: Session, tenant_id: uuid.UUID, alert_id: uuid.UUID) -> AlertRow | None:
    """One of the tenant's alerts as the feed shows it (another tenant's: None)."""
    rows = _alert_rows(session, [Alert.tenant_id == tenant_id, Alert.id == alert_id], 1)
    return rows[0] if rows else None


def recording_alerts(session: Session, tenant_id: uuid.UUID, recording_id: uuid.UUID,
                     limit: int = 100) -> list[AlertRow]:
    return _alert_rows(session, [Alert.tenant_id == tenant_id, Alert.recording_id == recording_id], limit)


def live_call_count(session: Session, tenant_id: uuid.UUID) -> int:
    """The tenant's calls streaming in right now (/v1/live)."""
    return int(session.scalar(select(func.count()).select_from(Recording).where(
        Recording.tenant_id == tenant_id, Recording.status == RecordingStatus.live.value)) or 0)
