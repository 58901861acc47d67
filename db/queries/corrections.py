"""Transcripts, supervisor corrections and prediction history. Query functions take the session and
never commit: the request or task that calls them owns the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ApiKey, Prediction, Recording, Segment, SegmentLabel, Transcript, utcnow
from db.queries.tenants import key_label
from db.queries.upsert import upsert


def get_transcript(session: Session, recording_id: uuid.UUID) -> Transcript | None:
    return session.get(Transcript, recording_id)


def put_transcript(session: Session, recording_id: uuid.UUID, fmt: str, rows: list[dict[str, Any]],
                   source: str = "client") -> Transcript:
    """Store (or replace) the recording's transcript; two concurrent PUTs both succeed, the later
    one's transcript stays."""
    values = {"recording_id": recording_id, "source": source, "format": fmt, "utterances": rows,
              "created_at": utcnow()}
    return upsert(session, Transcript, ["recording_id"], values,
                  ["source", "format", "utterances", "created_at"])


def tenant_segment(session: Session, tenant_id: uuid.UUID, segment_id: uuid.UUID) -> Segment | None:
    """A segment of one of the tenant's recordings; None for another tenant's (answered as 404)."""
    return session.scalar(
        select(Segment).join(Recording, Recording.id == Segment.recording_id)
        .where(Segment.id == segment_id, Recording.tenant_id == tenant_id)
    )


def predictions_of(session: Session, segment_id: uuid.UUID) -> list[Prediction]:
    """Every prediction of a segment, newest first (rescoring keeps the older versions)."""
    return list(session.scalars(
        select(Prediction).where(Prediction.segment_id == segment_id)
        .order_by(Prediction.created_at.desc(), Prediction.id.desc())
    ))


def set_label(session: Session, segment: Segment, tenant_id: uuid.UUID, label: str, note: str | None,
              key: ApiKey) -> SegmentLabel:
    """Record (or replace) the supervisor's label; the model's current answer is kept beside it."""
    newest = next(iter(predictions_of(session, segment.id)), None)
    now = utcnow()
    values = {"segment_id": segment.id, "tenant_id": tenant_id, "label": label, "note": note,
              "labeled_by": key_label(key), "api_key_id": key.id,
              "model_label": newest.label if newest is not None else None,
              "model_version": newest.model_version if newest is not None else None,
              "created_at": now, "updated_at": now}
    # created_at stays the first correction's; everything else is the newest one's.
    return upsert(session, SegmentLabel, ["segment_id"], values,
                  [k for k in values if k not in ("segment_id", "tenant_id", "created_at")])


def policy_skipped(segment: Segment) -> bool:
    """Not analyzed because of the tenant's role policy (never attempted), as opposed to a segment
    whose inference failed: no emotion data may be made about it, corrections included."""
    return not segment.analyzed and not segment.infer_attempts


def delete_label(session: Session, segment_id: uuid.UUID) -> bool:
    row = session.get(SegmentLabel, segment_id)
    if row is None:
        return False
    session.delete(row)
    return True


def labels_of(session: Session, segment_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, SegmentLabel]:
    if not segment_ids:
        return {}
    rows = session.scalars(select(SegmentLabel).where(SegmentLabel.segment_id.in_(list(segment_ids))))
    return {row.segment_id: row for row in rows}


@dataclass(frozen=True)
class CorrectionExample:
    """One corrected segment as training data: where its audio is and what it really was."""

    media: str
    channel: int
    start_s: float
    end_s: float
    label: str
    speaker: str


def tenant_corrections(session: Session, tenant_id: uuid.UUID) -> list[CorrectionExample]:
    rows = session.execute(
        select(Recording.id, Recording.media_uri, Segment.channel, Segment.start_s, Segment.end_s,
               Segment.speaker, SegmentLabel.label)
        .join(Segment, Segment.id == SegmentLabel.segment_id)
        .join(Recording, Recording.id == Segment.recording_id)
        .where(SegmentLabel.tenant_id == tenant_id,
               # Labels stored before a policy change never train on a role the policy now excludes.
               (Segment.analyzed.is_(True)) | (Segment.infer_attempts > 0))
        .order_by(Recording.id, Segment.start_s)
    )
    # Speakers are per call ("customer" in two calls is two people): qualify them by recording.
    return [CorrectionExample(media, int(channel), float(a), float(b), label, f"{rec_id}:{speaker}")
            for rec_id, media, channel, a, b, speaker, label in rows]
