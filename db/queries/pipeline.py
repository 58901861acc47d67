"""Queries the pipeline stages need: row locks, idempotent inserts, progress."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Select, exists, func, select
from sqlalchemy.orm import Session

from db.models import Prediction, Recording, RecordingStatus, Segment, Tenant, utcnow
from db.queries.upsert import insert_ignore


def lock_recording(session: Session, recording_id: uuid.UUID) -> Recording | None:
    """SELECT … FOR UPDATE on Postgres (SQLite ignores it; its writers are serialised anyway)."""
    stmt = select(Recording).where(Recording.id == recording_id).with_for_update()
    return session.scalars(stmt).one_or_none()


def set_status(rec: Recording, status: RecordingStatus, error: str | None = None) -> None:
    rec.status = status.value
    rec.error = error
    rec.updated_at = utcnow()
    if status.is_final:
        rec.completed_at = utcnow()


def tenant_policy(session: Session, tenant_id: uuid.UUID) -> tuple[list[str], bool]:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        return ["customer"], True
    return list(tenant.analyzed_roles or []), bool(tenant.analyze_unknown_roles)


def has_segments(session: Session, recording_id: uuid.UUID) -> bool:
    return bool(session.scalar(select(exists().where(Segment.recording_id == recording_id))))


# Rows per INSERT: a multi-row VALUES binds one parameter per column and row, and Postgres takes
# at most 65,535 parameters in one statement (a 6-hour 4-channel call has ~6,000 segments).
INSERT_CHUNK_ROWS = 1000


def insert_segments(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Idempotent on (recording_id, index): a re-run inserts nothing twice."""
    _insert_chunked(session, insert_ignore(session, Segment, ["recording_id", "index"]), rows)


def insert_predictions(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Idempotent on (segment_id, model_name, model_version)."""
    stmt = insert_ignore(session, Prediction, ["segment_id", "model_name", "model_version"])
    _insert_chunked(session, stmt, rows)


def _insert_chunked(session: Session, stmt: Insert, rows: Sequence[dict[str, Any]]) -> None:
    for i in range(0, len(rows), INSERT_CHUNK_ROWS):
        session.execute(stmt.values(list(rows[i: i + INSERT_CHUNK_ROWS])))


def _pending_filter(stmt: Select[Any], model_name: str, model_version: str) -> Select[Any]:
    done = exists().where(
        Prediction.segment_id == Segment.id,
        Prediction.model_name == model_name,
        Prediction.model_version == model_version,
    )
    return stmt.where(Segment.analyzed.is_(True), ~done)


def pending_segment_ids(
    session: Session, recording_id: uuid.UUID, model_name: str, model_version: str
) -> list[uuid.UUID]:
    stmt = select(Segment.id).where(Segment.recording_id == recording_id).order_by(Segment.index)
    return list(session.scalars(_pending_filter(stmt, model_name, model_version)))


def pending_segments(
    session: Session, segment_ids: Iterable[uuid.UUID], model_name: str, model_version: str
) -> list[Segment]:
    """Segments among ``segment_ids`` still lacking this model's prediction, on live recordings."""
    stmt = (
        select(Segment)
        .join(Recording, Recording.id == Segment.recording_id)
        .where(Segment.id.in_(list(segment_ids)), Recording.status != RecordingStatus.failed.value)
        .order_by(Segment.recording_id, Segment.index)
    )
    return list(session.scalars(_pending_filter(stmt, model_name, model_version)))


def pending_elsewhere(session: Session, model_name: str, model_version: str, exclude: Iterable[uuid.UUID],
                      limit: int) -> list[Segment]:
    """Up to ``limit`` segments of other live recordings that no worker has started yet (attempts 0),
    lacking this model's prediction, oldest recordings first: what a GPU worker adds to its own
    message's segments to run a fuller batch (dynamic batching across recordings)."""
    if limit <= 0:
        return []
    stmt = (
        select(Segment)
        .join(Recording, Recording.id == Segment.recording_id)
        .where(Recording.status.in_([RecordingStatus.segmented.value, RecordingStatus.analyzing.value,
                                     RecordingStatus.live.value]),
               Segment.infer_attempts == 0, Segment.id.not_in(list(exclude)))
        .order_by(Recording.created_at, Segment.recording_id, Segment.index)
        .limit(limit)
    )
    return list(session.scalars(_pending_filter(stmt, model_name, model_version)))


def speaker_acoustics(session: Session, recording_id: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
    rows = session.execute(
        select(Segment.speaker, Segment.acoustics).where(Segment.recording_id == recording_id)
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for speaker, acoustics in rows:
        if acoustics:
            out.setdefault(speaker, []).append(acoustics)
    return out


def progress(session: Session, recording_id: uuid.UUID, model_name: str, model_version: str) -> tuple[
    int, int
]:
    """(segments analysed by this model, segments to analyse) for one recording."""
    total = session.scalar(
        select(func.count()).select_from(Segment).where(
            Segment.recording_id == recording_id, Segment.analyzed.is_(True)
        )
    ) or 0
    done = session.scalar(
        select(func.count())
        .select_from(Prediction)
        .join(Segment, Segment.id == Prediction.segment_id)
        .where(
            Segment.recording_id == recording_id,
            # A segment marked unanalyzable by one run may have got a prediction from a parallel
            # duplicate run: it must not stand in for a segment that is still pending.
            Segment.analyzed.is_(True),
            Prediction.model_name == model_name,
            Prediction.model_version == model_version,
        )
    ) or 0
    return int(done), int(total)


def stuck_recordings(session: Session, older_than: datetime, limit: int = 100) -> list[Recording]:
    stmt = (
        select(Recording)
        .where(
            Recording.status.not_in([RecordingStatus.done.value, RecordingStatus.failed.value]),
            Recording.updated_at < older_than,
        )
        .order_by(Recording.updated_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(stmt))


def unpublished_final_recordings(session: Session, older_than: datetime, limit: int = 100) -> list[
    Recording
]:
    """Final recordings whose completion/failure event was never published (its message was lost
    after the final commit), finished before ``older_than`` so the normal path had its chance."""
    stmt = (
        select(Recording)
        .where(
            Recording.status.in_([RecordingStatus.done.value, RecordingStatus.failed.value]),
            Recording.final_event_at.is_(None),
            Recording.completed_at < older_than,
        )
        .order_by(Recording.completed_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def recordings_of_segments(session: Session, segment_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    stmt = select(Segment.recording_id).where(Segment.id.in_(list(segment_ids))).distinct()
    return list(session.scalars(stmt))
