"""GET /v1/review-queue: the analyzed segments whose correction would help the tenant's model most
(db/queries/review_queue.py says how they are picked), each with its call, times, current label
and why it was picked. Corrections go through PUT /v1/segments/{id}/label; a corrected segment
never comes back. Read-scope keys may read it (a wallboard or an export job lists, a supervisor
labels)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import SessionDep, SettingsDep, TenantDep
from api.schemas import ErrorOut, ModelRef
from db.queries import review_queue as queries

router = APIRouter(prefix="/v1/review-queue", tags=["segments"])

MAX_LIMIT = 100
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid or revoked API key"},
    422: {"model": ErrorOut, "description": f"limit is not a whole number from 1 to {MAX_LIMIT}"},
}


class ReviewCall(BaseModel):
    id: uuid.UUID
    external_id: str | None
    filename: str


class ReviewItemOut(BaseModel):
    segment_id: uuid.UUID
    call: ReviewCall
    index: int = Field(description="The segment's place in its call (as in the call's timeline).")
    speaker: str
    role: str
    start_s: float
    end_s: float
    label: str = Field(description="The newest prediction's label (what a correction would replace).")
    confidence: float
    model: ModelRef
    modalities: dict[str, str] = Field(description="Each modality's own label, where the prediction kept "
                                       "one (audio = voice, text = words, video = face).")
    reasons: list[str] = Field(description="Why it was picked, in words, strongest first.")
    score: float = Field(description="The pick's score (0..1, higher first), after spreading the picks "
                         "over calls and speakers.")

    @classmethod
    def build(cls, item: queries.ReviewItem, uncertain_below: float) -> ReviewItemOut:
        return cls(segment_id=item.segment_id,
                   call=ReviewCall(id=item.recording_id, external_id=item.external_id,
                                   filename=item.filename), index=item.index,
                   speaker=item.speaker, role=item.role, start_s=item.start_s, end_s=item.end_s,
                   label=item.label, confidence=item.confidence,
                   model=ModelRef(name=item.model_name, version=item.model_version),
                   modalities=item.modality_labels, reasons=queries.reasons(item, uncertain_below),
                   score=round(item.score, 4))


class ReviewQueueOut(BaseModel):
    items: list[ReviewItemOut]
    considered_calls: int = Field(description="The queue looks at this many of the tenant's most recent "
                                  "calls (leaving out those whose media was deleted).")


@router.get("", response_model=ReviewQueueOut, responses=ERRORS,
            summary="Segments whose correction would help most (active learning)")
def review_queue(session: SessionDep, tenant: TenantDep, settings: SettingsDep,
                 limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20) -> ReviewQueueOut:
    """Low confidence, modalities disagreeing and labels the tenant has few corrections of come first,
    spread over calls and speakers; corrected, unanalyzed and deleted ones never appear."""
    items = queries.review_queue(session, tenant.id, limit)
    return ReviewQueueOut(items=[ReviewItemOut.build(i, settings.uncertain_below) for i in items],
                          considered_calls=queries.RECENT_CALLS)
