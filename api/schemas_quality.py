"""Bodies of the transcript, correction and rescore endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from db.models import SegmentLabel
from worker.pipeline.contracts import Word
from worker.pipeline.labels import CANONICAL_LABELS, MAFW_EXTRA_LABELS, canonical

LABELS = CANONICAL_LABELS + MAFW_EXTRA_LABELS


class WordOut(BaseModel):
    word: str
    start_s: float
    end_s: float
    probability: float | None = Field(default=None, description="The recogniser's confidence in the word "
                                      "(our ASR); null for uploaded transcripts that did not give one.")
    text: str = Field(description="The word again (the name this field had first).")

    @classmethod
    def build(cls, w: Word) -> WordOut:
        return cls(word=w.text, start_s=w.start_s, end_s=w.end_s, probability=w.probability, text=w.text)


class UtteranceOut(BaseModel):
    start_s: float
    end_s: float
    text: str
    speaker: str | None = None
    channel: int | None = Field(default=None, description="Audio channel the words were said on, "
                                "when the transcript or the channel roles say so.")
    words: list[WordOut] = Field(default_factory=list)
    language: str | None = Field(default=None, description="Language our ASR heard on the channel.")


class TranscriptOut(BaseModel):
    recording_id: uuid.UUID
    source: str = Field(description="client (uploaded) or asr")
    format: str = Field(description="json or webvtt")
    created_at: datetime
    utterances: list[UtteranceOut]


class CorrectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(description=f"The true label: one of {', '.join(LABELS)} (synonyms such as "
                                   "'anger' or 'joy' are mapped).")
    note: str | None = Field(default=None, max_length=2000)

    @field_validator("label")
    @classmethod
    def _canonical(cls, value: str) -> str:
        label = canonical(value)
        if label is None:
            raise ValueError(f"unknown label '{value[:40]}'; use one of {', '.join(LABELS)}")
        return label

    @field_validator("note")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("note contains a NUL character")
        return value


class CorrectionOut(BaseModel):
    segment_id: uuid.UUID
    label: str
    note: str | None
    model_label: str | None = Field(description="The model's label when the correction was made.")
    model_version: str | None
    labeled_by: str = Field(description="Name and short id (first 8 hex digits of its id) of the API key "
                                        "that set the label.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def build(cls, row: SegmentLabel) -> CorrectionOut:
        return cls(segment_id=row.segment_id, label=row.label, note=row.note, model_label=row.model_label,
                   model_version=row.model_version, labeled_by=row.labeled_by, created_at=row.created_at,
                   updated_at=row.updated_at)


class RescoreIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(default=False, description="Also re-run segments that already have a prediction "
                        "of the current model version (e.g. after a transcript was added); it is replaced. "
                        "Predictions of other versions are always kept.")
    rerun_rules: bool = Field(default=False, description="When there is nothing to rescore (every "
                              "analyzable segment has a prediction of the current version), evaluate "
                              "the call's rules again, e.g. after a rule was added; an alert is never "
                              "fired twice for the same episode.")


class LastRescore(BaseModel):
    """What the newest rescore of a recording found (null until one ran)."""

    at: datetime
    model_version: str
    outcome: Literal["rescoring", "nothing_to_do"]
    segments: int = Field(description="Segments enqueued for the model (0 when there was nothing to do)")
    rules_rerun: bool
    message: str


class RescoreAccepted(BaseModel):
    recording_id: uuid.UUID
    status_url: str
    timeline_url: str
    force: bool
    rerun_rules: bool = False
