"""/v1/segments/{id}: one segment with its prediction history, and supervisors' corrections."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from api.deps import ApiKeyDep, SessionDep, TenantDep
from api.schemas import ErrorOut, EvidenceItem, ModelRef, TimelineSegment
from api.schemas_quality import CorrectionIn, CorrectionOut
from db.models import Prediction, Segment
from db.queries import corrections as queries
from worker.pipeline.text.transcript_index import TranscriptIndex

router = APIRouter(prefix="/v1/segments", tags=["segments"])

NOT_FOUND = "segment not found"
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid or revoked API key"},
    404: {"model": ErrorOut, "description": "No such segment for this tenant"},
}
LABEL_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS, 409: {"model": ErrorOut, "description": "The segment's role is not analyzed (tenant policy)"}}


class PredictionOut(BaseModel):
    """One model version's answer; rescoring adds rows and never changes older ones."""

    id: uuid.UUID
    model: ModelRef
    label: str
    scores: dict[str, float]
    confidence: float
    uncertain: bool
    valence: float | None
    arousal: float | None
    modalities: dict[str, Any]
    reasoning: list[EvidenceItem]
    reasoning_text: str
    created_at: datetime

    @classmethod
    def build(cls, p: Prediction) -> PredictionOut:
        return cls(id=p.id, model=ModelRef(name=p.model_name, version=p.model_version), label=p.label,
                   scores=p.scores, confidence=p.confidence, uncertain=p.uncertain, valence=p.valence,
                   arousal=p.arousal, modalities=p.modalities or {},
                   reasoning=[EvidenceItem.model_validate(e) for e in p.reasoning or []],
                   reasoning_text=p.reasoning_text, created_at=p.created_at)


class SegmentDetail(TimelineSegment):
    recording_id: uuid.UUID
    predictions: list[PredictionOut] = Field(description="Every model version's prediction, newest first.")


def _segment(session: Session, tenant_id: uuid.UUID, segment_id: uuid.UUID) -> Segment:
    seg = queries.tenant_segment(session, tenant_id, segment_id)
    if seg is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)
    return seg


@router.get("/{segment_id}", response_model=SegmentDetail, responses=ERRORS,
            summary="One segment: newest prediction, every earlier one, and its correction")
def get_segment(session: SessionDep, tenant: TenantDep, segment_id: uuid.UUID) -> SegmentDetail:
    seg = _segment(session, tenant.id, segment_id)
    history = queries.predictions_of(session, seg.id)
    transcript_row = queries.get_transcript(session, seg.recording_id)
    words = (TranscriptIndex.from_rows(transcript_row.utterances).words(
        seg.start_s, seg.end_s, seg.channel) if transcript_row is not None else [])
    base = TimelineSegment.build(seg, history[0] if history else None, words, seg.correction)
    return SegmentDetail(**base.model_dump(), recording_id=seg.recording_id,
                         predictions=[PredictionOut.build(p) for p in history])


@router.put("/{segment_id}/label", response_model=CorrectionOut, responses=LABEL_ERRORS,
            summary="Record the true label of a segment (kept beside the model's predictions)")
def put_label(session: SessionDep, key: ApiKeyDep, segment_id: uuid.UUID,
              body: CorrectionIn) -> CorrectionOut:
    seg = _segment(session, key.tenant_id, segment_id)
    if queries.policy_skipped(seg):
        raise HTTPException(status.HTTP_409_CONFLICT, detail=(
            f"segment is not analyzed under this tenant's policy ({seg.skip_reason}); no emotion label "
            "is recorded for it"))
    row = queries.set_label(session, seg, key.tenant_id, body.label, body.note, key)
    session.commit()
    return CorrectionOut.build(row)


@router.delete("/{segment_id}/label", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS,
               summary="Remove a segment's correction")
def delete_label(session: SessionDep, tenant: TenantDep, segment_id: uuid.UUID) -> Response:
    seg = _segment(session, tenant.id, segment_id)
    if not queries.delete_label(session, seg.id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="segment has no correction")
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
