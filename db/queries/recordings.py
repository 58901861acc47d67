"""Recording queries for the API. Every function is tenant-scoped where a client id comes in, takes
the caller's session and never commits: the request boundary owns the transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, delete, func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Prediction, Recording, Segment


@dataclass(frozen=True)
class RoleCounts:
    role: str
    segments: int
    analyzed: int  # segments the tenant's policy lets the model see
    predicted: int  # analyzed segments that already have at least one prediction


@dataclass(frozen=True)
class RecordingFilters:
    status: str | None = None
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    external_id: str | None = None


def get_recording(session: Session, tenant_id: uuid.UUID, recording_id: uuid.UUID) -> Recording | None:
    """Another tenant's id finds nothing, exactly like an id that does not exist."""
    stmt = select(Recording).where(Recording.id == recording_id, Recording.tenant_id == tenant_id)
    return session.scalars(stmt).one_or_none()


def get_recording_by_external_id(
    session: Session, tenant_id: uuid.UUID, external_id: str
) -> Recording | None:
    stmt = select(Recording).where(Recording.tenant_id == tenant_id, Recording.external_id == external_id)
    return session.scalars(stmt).one_or_none()


def add_recording(session: Session, recording: Recording) -> tuple[Recording, bool]:
    """Insert, or return the row that won the (tenant_id, external_id) race; ``created`` says which.

    The insert runs in a savepoint so losing the race leaves the caller's transaction usable."""
    try:
        with session.begin_nested():
            session.add(recording)
    except IntegrityError:
        if recording.external_id is None:
            raise
        existing = get_recording_by_external_id(session, recording.tenant_id, recording.external_id)
        if existing is None:  # the violation was some other constraint
            raise
        return existing, False
    return recording, True


def delete_recording(session: Session, tenant_id: uuid.UUID, recording_id: uuid.UUID) -> bool:
    """One DELETE; segments and predictions go with it through the FKs' ON DELETE CASCADE."""
    stmt = delete(Recording).where(Recording.id == recording_id, Recording.tenant_id == tenant_id)
    return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def role_counts(session: Session, recording_id: uuid.UUID) -> list[RoleCounts]:
    """Per-role segment counts in one grouped query (progress is their sum)."""
    has_prediction = select(Prediction.id).where(Prediction.segment_id == Segment.id).exists()
    stmt = (
        select(
            Segment.role,
            func.count(),
            func.count().filter(Segment.analyzed.is_(True)),
            func.count().filter(Segment.analyzed.is_(True), has_prediction),
        )
        .where(Segment.recording_id == recording_id)
        .group_by(Segment.role)
        .order_by(Segment.role)
    )
    return [RoleCounts(role, total, analyzed, predicted)
            for role, total, analyzed, predicted in session.execute(stmt)]


def timeline(session: Session, recording_id: uuid.UUID) -> list[tuple[Segment, Prediction | None]]:
    """Segments in call order with each one's newest prediction: two queries whatever the length."""
    segments = list(session.scalars(
        select(Segment)
        .where(Segment.recording_id == recording_id)
        .order_by(Segment.start_s, Segment.channel, Segment.index)
    ))
    if not segments:
        return []
    # Several model versions may have scored a segment; the newest one is what a reader sees.
    newest_first = (
        func.row_number()
        .over(partition_by=Prediction.segment_id,
              order_by=(Prediction.created_at.desc(), Prediction.id.desc()))
        .label("rank")
    )
    ranked = (
        select(Prediction.id, newest_first)
        .join(Segment, Segment.id == Prediction.segment_id)
        .where(Segment.recording_id == recording_id)
        .subquery()
    )
    newest = session.scalars(
        select(Prediction).join(ranked, ranked.c.id == Prediction.id).where(ranked.c.rank == 1)
    )
    by_segment = {prediction.segment_id: prediction for prediction in newest}
    return [(segment, by_segment.get(segment.id)) for segment in segments]


def list_recordings(
    session: Session,
    tenant_id: uuid.UUID,
    filters: RecordingFilters,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> list[Recording]:
    """Newest first, keyset-paginated on (created_at, id) so ix_recording_tenant_created serves
    both the filter and the order, and deep pages cost the same as the first one."""
    stmt = filter_recordings(select(Recording).where(Recording.tenant_id == tenant_id), filters)
    return newest_first_page(session, stmt, limit, after)


def filter_recordings(stmt: Select[Recording], filters: RecordingFilters) -> Select[Recording]:
    """The filters every recordings listing shares (API and dashboard)."""
    if filters.status is not None:
        stmt = stmt.where(Recording.status == filters.status)
    if filters.created_after is not None:
        stmt = stmt.where(Recording.created_at >= filters.created_after)
    if filters.created_before is not None:
        stmt = stmt.where(Recording.created_at < filters.created_before)
    if filters.external_id is not None:
        stmt = stmt.where(Recording.external_id == filters.external_id)
    return stmt


def newest_first_page(session: Session, stmt: Select[Recording], limit: int,
                      after: tuple[datetime, uuid.UUID] | None) -> list[Recording]:
    """One keyset page, newest first, after the (created_at, id) of the previous page's last row."""
    if after is not None:
        stmt = stmt.where(tuple_(Recording.created_at, Recording.id) < tuple_(*after))
    stmt = stmt.order_by(Recording.created_at.desc(), Recording.id.desc()).limit(limit)
    return list(session.scalars(stmt))
